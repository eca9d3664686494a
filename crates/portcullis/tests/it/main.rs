//! Integration tests: the real `portcullis` binary, started on 127.0.0.1 with ephemeral ports.

mod demo;
mod keys;
mod process;
mod serve;
