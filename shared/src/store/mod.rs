//! Storage adapters: DynamoDB for the functions, in-memory for use-case tests and benchmarks.

pub mod dynamodb;
pub mod effects;
pub mod memory;

pub use dynamodb::{DynamoIdempotency, DynamoStore};
pub use effects::{DynamoDeadLetters, DynamoEffects};
pub use memory::{MemoryDeadLetters, MemoryEffects, MemoryStore};
