//! blazar-server: OpenStack Blazar's reservation API v1 for compute hosts.
//!
//! The layers, outside in:
//! - [`app`] builds the poem application: routes, the request pipeline (request ids, `.json`
//!   suffix, content negotiation, the error envelope, access logs) and the database.
//! - [`api`] holds the v1 contract as poem-openapi types, one file per resource. Handlers parse,
//!   call one service function and map its result; [`api::error`] is the one place where domain
//!   errors become HTTP statuses.
//! - [`auth`] says who is calling (noauth headers or a Keystone token) and what they may do.
//! - [`service`] runs each operation in a database transaction over the sea-orm entities.
//! - [`domain`] holds the pure rules: input dates, validation, the filter language, host choice,
//!   statuses and events. It never touches the database and never reads the clock.
//! - [`jobs`] runs the lease lifecycle: the event runner, resource drivers, notifications.
//! - [`nova`] talks to Nova: host facts, the aggregate choreography of reservations,
//!   reconciliation and health polling. Nothing there runs inside a database transaction.
//! - [`enforcement`] holds upstream's usage enforcement filters: the longest lease and the
//!   external service that may refuse creates and updates.
//! - [`clock`] is the only place that reads the wall clock; [`config`] the layered settings.
//! - [`shutdown`] is the one stop signal that every long-lived task selects on, and the bounded
//!   drain of webhook deliveries and `on-end` posts at exit.
//! - [`metrics`] is the Prometheus registry that the pipeline, the runner, the write turn and the
//!   notifier count in, served at `/metrics`.

pub mod api;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod db;
pub mod domain;
pub mod enforcement;
pub mod failpoint;
pub mod jobs;
pub mod metrics;
pub mod nova;
pub mod service;
pub mod shutdown;
