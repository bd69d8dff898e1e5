//! The built-in scenarios, ping, kv and sql, on the public scenario API, with what of their
//! reports is their own: their timelines and what their systems leave for a report.

pub mod kv;
pub mod ping;
pub mod sql;

use crate::scenario::Registry;

/// The built-in scenarios.
pub fn registry() -> Registry {
    vec![Box::new(ping::Ping), Box::new(kv::Kv), Box::new(sql::Sql)]
}
