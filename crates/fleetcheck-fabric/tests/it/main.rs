//! Integration tests of the fabric: real namespaces, real agents. Tests that need root skip with
//! a reason when not root, and fail instead when `CI=true`.

mod cleanup;
mod clock;
mod faults;
mod filesystem;
mod host;
mod isolation;
mod limits;
mod machines;
mod power;
mod qemu;
mod support;
