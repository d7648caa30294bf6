//! The `rolltest` commands run as a process, without a cluster: `run` and
//! `load` on plain load, `report`, `compare`, `lint`, JUnit output, and the
//! kind scenarios' `--check`. One test binary: each module was a binary of
//! its own, and linking them dominated the test build on a 2-core machine.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod compare;
mod junit;
mod kind;
mod lint;
