//! Integration tests: the real `portcullis` binary, started on 127.0.0.1 with ephemeral ports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes,
    reason = "test code: a broken assumption must fail the test loudly; Running::drop reaps children"
)]

mod audit;
mod data;
mod demo;
mod help;
mod keys;
mod leaks;
mod mobile;
mod multinode;
mod process;
mod serve;
mod tls;
