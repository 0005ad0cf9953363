//! Storage adapters: DynamoDB for the functions, in-memory for use-case tests and benchmarks.

pub mod dynamodb;
pub mod memory;

pub use dynamodb::{DynamoIdempotency, DynamoStore};
pub use memory::MemoryStore;
