//! The Rhai lesson runner.
