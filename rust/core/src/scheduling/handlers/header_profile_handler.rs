//! header-profile-handler (llm-d): the scheduling profile named by a request header runs alone,
//! for a caller that already knows which stage a call is for. With one profile it always runs;
//! with several, a missing or blank header runs `defaultProfile`, and a header naming no profile
//! fails the cycle.

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::profile_handler::{HandlerSpec, ProfileHandler};
use crate::scheduling::contracts::scorer::{Picks, StageProfiles};
use crate::scheduling::cycle::{Cycle, ScheduleError};
use crate::scheduling::profile::SchedulingProfile;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct HeaderParams {
    header_name: String,
    default_profile: String,
}

impl Default for HeaderParams {
    fn default() -> Self {
        HeaderParams {
            header_name: "EPP-Profile".into(),
            default_profile: "decode".into(),
        }
    }
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: HeaderParams = p.parse()?;
    if params.header_name.trim().is_empty() {
        return Err(p.error("parameters.headerName: must not be empty"));
    }
    Ok(Plugin::ProfileHandler(HandlerSpec::Header {
        header: params.header_name.to_ascii_lowercase(),
        default_profile: params.default_profile,
    }))
}

pub struct HeaderProfileHandler {
    header: String,
    /// Position of `defaultProfile`, when a profile has that name.
    default: Option<usize>,
    names: Vec<String>,
}

impl HeaderProfileHandler {
    pub fn new(header: &str, default: &str, profiles: &[SchedulingProfile]) -> Self {
        HeaderProfileHandler {
            header: header.to_owned(),
            default: profiles.iter().position(|p| p.name == default),
            names: profiles.iter().map(|p| p.name.clone()).collect(),
        }
    }

    fn choose(&self, cycle: &Cycle<'_>) -> Result<usize, ScheduleError> {
        if self.names.len() == 1 {
            return Ok(0);
        }
        match cycle.request.header(&self.header).map(str::trim) {
            None | Some("") => self.default.ok_or_else(|| {
                ScheduleError::NoEndpoints(format!(
                    "header '{}' is missing and no default profile is configured",
                    self.header
                ))
            }),
            Some(name) => self.names.iter().position(|n| n == name).ok_or_else(|| {
                ScheduleError::NoEndpoints(format!(
                    "header '{}' names profile '{name}', which is not configured",
                    self.header
                ))
            }),
        }
    }
}

impl ProfileHandler for HeaderProfileHandler {
    fn run(
        &self,
        profiles: &[SchedulingProfile],
        cycle: &Cycle<'_>,
        picks: &mut Picks,
    ) -> Result<(), ScheduleError> {
        picks.prefill = None;
        picks.encode.clear();
        let chosen = self.choose(cycle)?;
        picks.profiles = StageProfiles {
            primary: chosen,
            ..Default::default()
        };
        profiles[chosen].schedule_primary(cycle, picks)
    }
}
