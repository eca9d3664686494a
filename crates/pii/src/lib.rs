//! `portcullis data`: find personal data in datasets (CSV/TSV and JSON Lines, compressed or
//! not) and report where it is.
//!
//! The core is sans-IO: [`rules`] (rules as data, each with examples), [`validate`] (Luhn,
//! mod-97, mod-11, Base58Check, Bech32, numbering plans, public suffixes), [`detect`] (one
//! combined pass, then validators, context and overlap resolution), [`column`] (what a header
//! says). At the edge, [`read`] streams records with bounded memory, [`scan`] accumulates a
//! report per column, and [`report`] writes it for people, programs or code-scanning UIs.

#[cfg(feature = "data")]
pub mod act;
pub mod column;
pub mod date;
pub mod detect;
pub mod kind;
pub mod mask;
pub mod names;
#[cfg(feature = "data")]
pub mod parquet;
pub mod phone;
#[cfg(feature = "data")]
pub mod protect;
#[cfg(feature = "data")]
pub mod read;
#[cfg(feature = "data")]
pub mod report;
#[cfg(feature = "data")]
pub mod risk;
pub mod rules;
#[cfg(feature = "data")]
pub mod scan;
pub mod validate;

pub use detect::{Detector, Finding};
pub use kind::Kind;
