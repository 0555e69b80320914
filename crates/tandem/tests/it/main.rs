//! Integration tests of the tandem library: one binary, a module per area.

mod data;
mod loss;
mod train;
