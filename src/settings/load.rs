//! Where settings come from: the compiled-in defaults, an optional file and the environment,
//! layered by the `config` crate into the raw layer, then converted and checked.

use std::path::Path;

use config::{Config, Environment, File, FileFormat};
use secrecy::SecretString;

use super::raw::RawSettings;
use super::{ConfigSource, DEFAULT_TOML, Settings, SettingsError};

impl Settings {
    /// Layers the defaults, `file` (if any) and the environment, then converts and checks.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, Environment::with_prefix("METRICGATE"))
    }

    pub(super) fn load_from(file: Option<&Path>, env: Environment) -> Result<Self, SettingsError> {
        Self::load_layered(file, env, "", &[])
    }

    /// What `demo` runs on: [`Settings::load`]'s sources, with `defaults` (TOML) between the
    /// compiled-in defaults and the file, so the file and the environment still win, and
    /// `overrides` (setting, value) above everything: the demo's own appliance. Built in code
    /// as far as a reload is concerned (there is nothing to read again without the demo).
    pub fn load_demo(
        file: Option<&Path>,
        defaults: &str,
        overrides: &[(&str, String)],
    ) -> Result<Self, SettingsError> {
        let mut settings = Self::load_layered(
            file,
            Environment::with_prefix("METRICGATE"),
            defaults,
            overrides,
        )?;
        settings.source = ConfigSource::Built;
        Ok(settings)
    }

    fn load_layered(
        file: Option<&Path>,
        env: Environment,
        defaults: &str,
        overrides: &[(&str, String)],
    ) -> Result<Self, SettingsError> {
        let mut builder = Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .add_source(File::from_str(defaults, FileFormat::Toml));
        for (key, value) in overrides {
            builder = builder
                .set_override(*key, value.as_str())
                .map_err(|e| SettingsError(vec![format!("{key}: {e}")]))?;
        }
        if let Some(path) = file {
            if !path.exists() {
                return Err(SettingsError(vec![format!(
                    "config file {} does not exist",
                    path.display()
                )]));
            }
            builder = builder.add_source(File::from(path.to_path_buf()));
        }
        // Environment values stay text: guessing types would read a string made of digits
        // (a hex pin, a token) as a number and lose its leading zeros. Numbers and booleans
        // are read from the text by the raw layer's deserializers; lists are comma-separated.
        let env = env
            .prefix_separator("__")
            .separator("__")
            .try_parsing(false);
        let config = builder
            .add_source(env)
            .build()
            .map_err(|e| SettingsError(vec![format!("configuration: {e}")]))?;
        let raw: RawSettings = config
            .try_deserialize()
            .map_err(|e| SettingsError(vec![format!("configuration: {e}")]))?;
        let mut settings = Settings::try_from(raw)?;
        settings.source = ConfigSource::Loaded {
            file: file.map(Path::to_path_buf),
        };
        Ok(settings)
    }

    /// The same sources read again (the configuration file may have changed); `None` for
    /// settings built in code.
    pub fn reread(&self) -> Option<Result<Self, SettingsError>> {
        match &self.source {
            ConfigSource::Built => None,
            ConfigSource::Loaded { file } => Some(Self::load(file.as_deref())),
        }
    }

    /// Settings for a gateway in front of `upstream_url`, used by `demo`, the tests and the
    /// benches: the defaults with that appliance and its tokens.
    pub fn for_upstream(
        upstream_url: &str,
        public: &str,
        private: &str,
    ) -> Result<Self, SettingsError> {
        let mut raw = RawSettings::defaults()?;
        raw.upstream.url = upstream_url.to_owned();
        raw.upstream.public_token = public.to_owned();
        raw.upstream.private_token = SecretString::from(private.to_owned());
        // A gateway built in code (tests, benchmarks) keeps nothing on disk unless asked.
        raw.cache.dir = String::new();
        Settings::try_from(raw)
    }

    /// The compiled-in defaults, in front of a placeholder appliance
    /// (`http://appliance.invalid` with placeholder tokens): for code that needs a section's
    /// defaults (`Settings::defaults().query`) or a whole valid `Settings` to start from.
    pub fn defaults() -> Self {
        Self::for_upstream("http://appliance.invalid", "public", "private")
            .unwrap_or_else(|e| panic!("config/default.toml is invalid: {e}"))
    }
}
