//! hyper2kvm: migrate virtual machines from VMware, Hyper-V and libvirt hosts onto KVM.
//!
//! The flow is parse → plan → execute: [`config`] reads documents, [`manifest`] and [`profile`]
//! turn them into a validated model, [`plan`] makes every decision, [`pipeline`] runs the stages
//! through [`exec`] (the only module that starts processes) and fires [`hooks`] between them,
//! and [`report`] records outcomes; [`schemas`] holds the JSON Schemas of the files it reads and
//! writes.
//! [`app`] has one function per mode; `main.rs` only parses the command line and maps errors to
//! exit codes.

pub mod app;
pub mod atomic;
pub mod batch;
pub mod boot_test;
pub mod checksum;
pub mod cli;
pub mod clock;
pub mod config;
pub mod diag;
pub mod events;
pub mod exec;
pub mod exit_code;
pub mod exports;
pub mod files;
pub mod fuzzing;
pub mod guest;
pub mod hooks;
pub mod libvirt;
pub mod lock;
pub mod manifest;
pub mod mapping;
pub mod outcome;
pub mod pipeline;
pub mod plan;
pub mod profile;
pub mod reaper;
pub mod report;
pub mod schemas;
pub mod spelling;
pub mod stage;
pub mod tools;
pub mod ui;
pub mod units;
