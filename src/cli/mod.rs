//! Command-line interface of the `onair` binary.

pub mod input;

pub use input::{InputSpec, InputSpecError};
