//! Integration tests of the tandem library: one binary, a module per area.

mod data;
mod eval;
mod image;
mod index;
mod loss;
mod text;
mod train;
