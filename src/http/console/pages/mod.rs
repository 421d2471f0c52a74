//! The console's pages, one module each (see "Adding a page" in `console/mod.rs`).

pub mod accounts;
pub mod actions;
pub mod dashboard;
pub mod login;
pub mod maintenance;
pub mod manifest;
pub mod repo;
pub mod repos;
