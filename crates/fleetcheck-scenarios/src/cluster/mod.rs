//! The cluster layer both scenarios share: the typed fault vocabulary ([`Fault`]).

pub mod fault;

pub use fault::Fault;
