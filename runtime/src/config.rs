//! Errors in Keel's configuration (the `KEEL_*` environment variables and builder values).

/// A configuration value Keel cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// An environment variable holds a value of the wrong form.
    #[error("{variable}={value:?} is not valid: expected {expected}")]
    InvalidVariable {
        /// The variable's name.
        variable: &'static str,
        /// What it holds.
        value: String,
        /// What it should hold.
        expected: &'static str,
    },
    /// A builder value is out of range.
    #[error("{setting} is not valid: {reason}")]
    InvalidSetting {
        /// The setting.
        setting: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// A variable asks for a part of Keel this build leaves out (a cargo feature of
    /// `keel-runtime` that is off).
    #[error("{variable} is set, but keel-runtime was built without its `{feature}` feature")]
    FeatureMissing {
        /// The variable.
        variable: &'static str,
        /// The feature it needs.
        feature: &'static str,
    },
}

/// Parses the variable `name` with `parse`, or returns `None` when it is unset or blank.
pub(crate) fn parse_var<T>(
    name: &'static str,
    expected: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, ConfigError> {
    parse_value(name, crate::function::var(name), expected, parse)
}

/// Parses `value`, the value of the variable `name` (`None` when it is unset or blank), with
/// `parse`; a value `parse` refuses is [`ConfigError::InvalidVariable`].
pub(crate) fn parse_value<T>(
    name: &'static str,
    value: Option<String>,
    expected: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, ConfigError> {
    match value {
        None => Ok(None),
        Some(value) => parse(&value).map(Some).ok_or(ConfigError::InvalidVariable {
            variable: name,
            value,
            expected,
        }),
    }
}
