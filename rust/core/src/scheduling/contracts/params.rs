//! Plugin parameters: each plugin parses its own `parameters` object with serde, strictly, and
//! errors name the plugin and the field.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::scheduling::config::ConfigError;

/// One configured plugin instance as its factory sees it.
pub struct Params<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub raw: Option<&'a Value>,
}

impl Params<'_> {
    /// Parse the parameters into `T` (`#[serde(default, deny_unknown_fields)]` types);
    /// absent or null parameters give `T::default()`.
    pub fn parse<T: DeserializeOwned + Default>(&self) -> Result<T, ConfigError> {
        match self.raw {
            None | Some(Value::Null) => Ok(T::default()),
            Some(v) => T::deserialize(v).map_err(|e| self.error(self.locate::<T>(v, e))),
        }
    }

    /// serde names unknown keys but not the key whose value has the wrong type: find the first
    /// key that fails on its own (every other field has a default) and name it.
    fn locate<T: DeserializeOwned + Default>(&self, v: &Value, e: serde_json::Error) -> String {
        let failing = v.as_object().and_then(|map| {
            map.iter().find_map(|(k, value)| {
                let alone = Value::Object([(k.clone(), value.clone())].into_iter().collect());
                T::deserialize(&alone).err().map(|e| (k, e))
            })
        });
        match failing {
            Some((key, e)) => format!("parameters.{key}: {e}"),
            None => format!("parameters: {e}"),
        }
    }

    pub fn error(&self, what: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!("plugin '{}' ({}): {what}", self.name, self.kind))
    }
}

/// The parameters of a plugin that takes none: any key is an error.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}
