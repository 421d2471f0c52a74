//! [`Secret`]: a configuration value that must never be shown.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A password, token or key from the configuration. `Debug` prints
/// `<redacted>`; there is no `Display` and no `Deref`, so the value is only
/// reached through [`Secret::expose`], never formatted by accident. A struct
/// holding one can derive `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret's text, for the one place that sends or checks it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

/// Read like every secret key: verbatim text (numbers and booleans as
/// written), which `REGISTRY_…_FILE` may supply. A field of type
/// `Option<Secret>` names [`super::de::secret`] instead, so that an empty
/// value means unset.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        super::de::secret_text(d).map(Secret)
    }
}
