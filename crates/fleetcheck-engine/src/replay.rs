//! Replay files: a failing case as JSON (seed + initial state + commands) that runs again
//! exactly as it was.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::case::Case;
use crate::model::Model;

/// The format tag written into every replay file.
pub const REPLAY_FORMAT: &str = "fleetcheck-replay/1";

/// A replay file's contents.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ReplayFile<M: Model> {
    /// Always [`REPLAY_FORMAT`].
    pub format: String,
    /// The scenario (model) the case belongs to.
    pub scenario: String,
    /// The seed of the run that found it.
    pub seed: u64,
    /// Whatever else the caller needs to rebuild the system (backend, configuration, ...).
    #[serde(default)]
    pub context: serde_json::Value,
    /// Why it failed when it was found.
    #[serde(default)]
    pub reason: String,
    /// The case itself.
    pub case: Case<M>,
}

/// Why a replay file could not be read.
#[derive(Debug)]
pub enum ReplayError {
    /// Not JSON, or not of this model's shape.
    Malformed(serde_json::Error),
    /// A different format version.
    WrongFormat(String),
    /// Made for another scenario.
    WrongScenario {
        /// The scenario in the file.
        found: String,
        /// The scenario expected.
        expected: String,
    },
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Malformed(e) => write!(f, "replay file is malformed: {e}"),
            ReplayError::WrongFormat(v) => {
                write!(
                    f,
                    "replay file has format {v:?}, expected {REPLAY_FORMAT:?}"
                )
            }
            ReplayError::WrongScenario { found, expected } => {
                write!(f, "replay file is for scenario {found:?}, not {expected:?}")
            }
        }
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReplayError::Malformed(e) => Some(e),
            _ => None,
        }
    }
}

impl<M: Model> ReplayFile<M> {
    /// A replay file for `case`.
    pub fn new(
        scenario: impl Into<String>,
        seed: u64,
        case: Case<M>,
        reason: impl Into<String>,
        context: serde_json::Value,
    ) -> Self {
        Self {
            format: REPLAY_FORMAT.to_string(),
            scenario: scenario.into(),
            seed,
            context,
            reason: reason.into(),
            case,
        }
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("replay files serialise to JSON")
    }

    /// Reads a replay file of `scenario`.
    pub fn from_json(text: &str, scenario: &str) -> Result<Self, ReplayError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(ReplayError::Malformed)?;
        let format = value.get("format").and_then(|f| f.as_str()).unwrap_or("");
        if format != REPLAY_FORMAT {
            return Err(ReplayError::WrongFormat(format.to_string()));
        }
        let found = value.get("scenario").and_then(|f| f.as_str()).unwrap_or("");
        if found != scenario {
            return Err(ReplayError::WrongScenario {
                found: found.to_string(),
                expected: scenario.to_string(),
            });
        }
        serde_json::from_value(value).map_err(ReplayError::Malformed)
    }

    /// Reads only the scenario name of a replay file (checking its format), to pick the model
    /// before parsing the rest.
    pub fn scenario_of(text: &str) -> Result<String, ReplayError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(ReplayError::Malformed)?;
        let format = value.get("format").and_then(|f| f.as_str()).unwrap_or("");
        if format != REPLAY_FORMAT {
            return Err(ReplayError::WrongFormat(format.to_string()));
        }
        Ok(value
            .get("scenario")
            .and_then(|f| f.as_str())
            .unwrap_or("")
            .to_string())
    }
}
