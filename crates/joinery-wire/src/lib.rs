//! # joinery-wire
//!
//! How Joinery records look on the wire: the Avro schemas of `schemas/`
//! (embedded at build time), the Confluent wire format (magic byte, schema
//! id, Avro binary), a client for any Confluent-compatible schema registry,
//! and the mapping between Avro values and the domain's [`Event`].
//!
//! Every service that reads or writes Kafka goes through this crate: the
//! ingest gateway encodes, the processor decodes department events and
//! encodes views, the projections decode views.
//!
//! # Layout
//!
//! - [`catalog`]: the reviewed `.avsc` files, parsed once.
//! - [`framing`]: Confluent framing, with a named error per kind of bad record.
//! - [`registry`]: HTTP client for the registry REST API, with an id cache.
//! - [`codec`]: Avro values to and from domain events and mission views.
//! - [`control`]: the control records a rebuild writes on a view topic.
//! - [`watermark`]: the watermark records the processor writes there.
//! - [`names`]: topic and header names, in one place.
//!
//! [`Event`]: joinery_domain::Event

pub mod catalog;
pub mod codec;
pub mod control;
pub mod framing;
pub mod names;
pub mod registry;
pub mod watermark;

pub use catalog::Catalog;
pub use codec::DecodeError;
pub use framing::{FramingError, MAGIC_BYTE};
pub use registry::{RegistryClient, RegistryError};
