//! `portcullis serve`: a gateway that lets no one reach a model without a credential.
//!
//! A request travels through the modules in the order they are listed here:
//!
//! - [`serve`] accepts connections on the public and admin listeners and shuts down gracefully;
//! - [`router`] builds the one layer stack every request passes, outermost first;
//! - [`authn`] turns a credential into a [`authn::Principal`], or refuses with 401;
//! - [`limits`] keeps each principal inside its rate, concurrency and quotas (429/503);
//! - [`authz`] decides whether that principal may touch a model, minting the [`authz::Grant`]
//!   that is the only way to reach a backend;
//! - [`oip`] decodes and validates Open Inference Protocol requests and encodes responses;
//! - [`backend`] runs the model (tract or ONNX Runtime) on a bounded blocking pool;
//! - [`minimise`] cuts the outputs down to what the caller's output policy allows;
//! - [`error`] is the one place where a failure becomes an HTTP body;
//! - [`audit`] leaves exactly one tamper-evident record per request.
//!
//! [`broker`] is the token broker beside them: it exchanges an app user's ID token and a DPoP
//! proof for a short-lived, device-bound token that [`authn`] then accepts.
//!
//! [`config`] validates the TOML before anything starts; [`store`] keeps API keys (hashed) in
//! SQLite; [`keys`] is the key lifecycle the CLI drives; [`metrics`] feeds `/metrics` on the
//! admin listener.

// The modules in layer order: each uses only the modules above it in this list (the `tidy`
// test holds it to that, reading this list; rustfmt.toml keeps rustfmt from sorting it).
//
// Leaves: no module of this crate below them.
pub mod hex;
pub mod mac;
pub mod secret_file;
pub mod shutdown;
pub mod time;
pub mod cert_identity;
// The vocabulary every part speaks: request facts, reasons, limits as written, errors, the
// protocol, output policies.
pub mod request;
pub mod reason;
pub mod limit_spec;
pub mod error;
pub mod body;
pub mod oip;
pub mod minimise;
// The parts: storage, the audit log, configuration, who a caller is, metrics, connections, TLS.
pub mod store;
pub mod audit;
pub mod config;
pub mod principal;
pub mod metrics;
pub mod connection;
pub mod tls;
// A request's checks and what runs it, in the order a request meets them.
pub mod limits;
pub mod broker;
pub mod authn;
pub mod keys;
pub mod authz;
pub mod backend;
pub mod llm;
// The server: its state, handlers, the layer stack, the listeners.
pub mod state;
pub mod handler;
pub mod router;
pub mod serve;

#[cfg(test)]
mod tidy;

pub use config::Config;
pub use serve::{Server, serve};
pub use state::Gateway;
