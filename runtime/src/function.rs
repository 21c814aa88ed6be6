//! What the Lambda environment says about the function itself.

use std::env;

/// The function's name, version and memory size, from the variables Lambda sets
/// (`AWS_LAMBDA_FUNCTION_NAME`, `AWS_LAMBDA_FUNCTION_VERSION`, `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionInfo {
    /// Function name; empty outside Lambda.
    pub name: String,
    /// Published version, or `$LATEST`.
    pub version: String,
    /// Configured memory in MB; 0 when unknown.
    pub memory_size: u32,
}

impl FunctionInfo {
    /// Reads the Lambda variables; missing ones give empty values (useful outside Lambda).
    pub fn from_env() -> Self {
        Self {
            name: env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default(),
            version: env::var("AWS_LAMBDA_FUNCTION_VERSION").unwrap_or_else(|_| "$LATEST".to_owned()),
            memory_size: env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
                .ok()
                .and_then(|m| m.trim().parse().ok())
                .unwrap_or(0),
        }
    }
}

/// Reads a variable that is set and not blank.
pub(crate) fn var(name: &str) -> Option<String> {
    env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The service name: `KEEL_SERVICE`, else `given`, else the function's name.
pub(crate) fn service_name(given: String, function: &FunctionInfo) -> String {
    let service = var("KEEL_SERVICE").unwrap_or(given);
    if service.is_empty() {
        function.name.clone()
    } else {
        service
    }
}
