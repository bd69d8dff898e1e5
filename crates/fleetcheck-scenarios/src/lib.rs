//! fleetcheck's built-in scenarios: pure models paired with systems that run them on the
//! fabric, and the configuration file that sets their parameter domains.
//!
//! - [`ping`]: the seed's test — [`ping::PingModel`] and [`ping::PingSystem`].
//! - [`kv`]: a replicated key-value store (etcd, or in-memory stores) under faults, with
//!   concurrent clients whose history must be linearizable.
//! - [`sql`]: PostgreSQL 15 under faults, with concurrent transactions whose history must
//!   satisfy the claimed isolation level.
//! - [`cluster`]: what both share: the fault vocabulary and the infrastructure logic.
//! - [`config::ScenarioConfig`]: the TOML configuration file.
//!
//! ```
//! use std::sync::Arc;
//! use fleetcheck_engine::{run, Config, Outcome};
//! use fleetcheck_fabric::fake::FakeBackend;
//! use fleetcheck_scenarios::{config::ScenarioConfig, ping::{PingModel, PingSystem}};
//!
//! let config = ScenarioConfig::default();
//! let system = PingSystem::new(Arc::new(FakeBackend::new()), &config);
//! let report = run(&PingModel::new(config), &system, &Config { seed: Some(1), ..Config::default() }, &());
//! assert!(matches!(report.outcome, Outcome::Passed));
//! ```

pub mod cluster;
pub mod config;
pub mod file;
pub mod kv;
pub mod lines;
pub mod ping;
pub mod rules;
pub mod sql;

/// The names of the built-in scenarios.
pub const SCENARIOS: &[&str] = &["ping", "kv", "sql"];
