//! Placeholder until the dashboards land.
use serde_json::{json, Value};

use crate::services::Service;

/// The functions' memory (MB).
pub const MEMORY_MB: i64 = 256;

/// A dashboard body.
pub fn body(_service: &Service) -> Value {
    json!({"widgets": []})
}

/// Lambda's price per GB-second on x86_64 in us-east-1 (USD).
pub const DEFAULT_PRICE_PER_GB_SECOND: &str = "0.0000166667";

/// Lambda's price per million requests (USD).
pub const DEFAULT_PRICE_PER_MILLION_REQUESTS: &str = "0.20";
