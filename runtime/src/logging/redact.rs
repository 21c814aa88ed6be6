//! Masking of sensitive JSON fields in logged events and payloads.

use serde_json::Value;

/// The text a redacted value is replaced with.
pub const MASK: &str = "***";

/// Replaces the values of configured field names with [`MASK`], at any depth of a JSON document.
///
/// Names match case-insensitively. The default set is `email`, `phone` and `card_number`
/// (`KEEL_REDACT_FIELDS` overrides it).
///
/// ```
/// use keel_runtime::logging::Redactor;
/// use serde_json::json;
///
/// let redactor = Redactor::new(["email", "card_number"]);
/// let mut event = json!({"guest": {"email": "a@b.c", "cards": [{"card_number": "4111"}]}, "seats": 2});
/// redactor.redact(&mut event);
/// assert_eq!(event, json!({"guest": {"email": "***", "cards": [{"card_number": "***"}]}, "seats": 2}));
/// ```
#[derive(Clone, Debug)]
pub struct Redactor {
    fields: Vec<String>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(["email", "phone", "card_number"])
    }
}

impl Redactor {
    /// A redactor for the given field names.
    pub fn new<I, S>(fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let fields = fields
            .into_iter()
            .map(|f| f.as_ref().trim().to_ascii_lowercase())
            .filter(|f| !f.is_empty())
            .collect();
        Self { fields }
    }

    /// Parses a comma-separated list, as `KEEL_REDACT_FIELDS` holds.
    pub fn from_list(list: &str) -> Self {
        Self::new(list.split(','))
    }

    /// Whether values under `name` are masked.
    pub fn is_sensitive(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.eq_ignore_ascii_case(name))
    }

    /// Whether no field is masked.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Masks every sensitive field of `value`, at any depth — also inside string values that
    /// hold JSON documents, such as the `body` of an API Gateway event.
    pub fn redact(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(text) => {
                if let Some(inner) = self.redact_json_text(text) {
                    *text = inner.to_string();
                }
            }
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    if self.is_sensitive(key) {
                        *child = Value::String(MASK.to_owned());
                    } else {
                        self.redact(child);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.redact(item)),
            _ => {}
        }
    }

    /// If `text` is a JSON object or array, returns it redacted; otherwise `None`.
    pub fn redact_json_text(&self, text: &str) -> Option<Value> {
        let trimmed = text.trim_start();
        if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
            return None;
        }
        let mut value: Value = serde_json::from_str(text).ok()?;
        self.redact(&mut value);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_at_any_depth_and_ignores_case() {
        let redactor = Redactor::from_list(" Email , phone,,");
        let mut value = json!([{"EMAIL": "x", "nested": {"deeper": [{"phone": {"n": 1}}]}}, "email"]);
        redactor.redact(&mut value);
        assert_eq!(
            value,
            json!([{"EMAIL": "***", "nested": {"deeper": [{"phone": "***"}]}}, "email"])
        );
    }

    #[test]
    fn masks_inside_json_held_in_strings() {
        let redactor = Redactor::default();
        let mut event = json!({"body": "{\"email\":\"a@b.c\",\"seats\":2}", "note": "email me"});
        redactor.redact(&mut event);
        assert_eq!(
            event,
            json!({"body": "{\"email\":\"***\",\"seats\":2}", "note": "email me"})
        );
    }

    #[test]
    fn only_json_text_is_parsed() {
        let redactor = Redactor::default();
        assert_eq!(redactor.redact_json_text("plain text"), None);
        assert_eq!(redactor.redact_json_text("{broken"), None);
        assert_eq!(
            redactor.redact_json_text(r#"{"card_number":"4111"}"#),
            Some(json!({"card_number": "***"}))
        );
    }
}
