//! Wiring the one profile handler: its spec (as its factory parsed it) resolved against the
//! built profiles and decider plugins, so a name that refers to nothing fails at config time.

use std::collections::HashMap;
use std::sync::Arc;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::decider::PdDecider;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::profile_handler::{DisaggSpec, HandlerSpec, ProfileHandler};
use crate::scheduling::handlers::data_parallel_profile_handler::DataParallelProfileHandler;
use crate::scheduling::handlers::disagg_profile_handler::DisaggProfileHandler;
use crate::scheduling::handlers::header_profile_handler::HeaderProfileHandler;
use crate::scheduling::handlers::pd_decider::PrefixBasedPdDecider;
use crate::scheduling::handlers::single_profile_handler::SingleProfileHandler;
use crate::scheduling::profile::SchedulingProfile;
use crate::scheduling::scheduler::Built;

pub struct WiredHandler {
    pub handler: Box<dyn ProfileHandler>,
    /// (name, type), for describe().
    pub name: (String, String),
    /// Data-parallel: decisions name the picked pod at this port.
    pub primary_port: Option<u16>,
}

pub fn build_handler(
    built: &[Built],
    profiles: &[SchedulingProfile],
) -> Result<WiredHandler, ConfigError> {
    let handlers: Vec<(&Built, &HandlerSpec)> = built
        .iter()
        .filter_map(|b| match &b.plugin {
            Plugin::ProfileHandler(h) => Some((b, h)),
            _ => None,
        })
        .collect();
    let (b, spec) = match handlers.as_slice() {
        [] if profiles.len() == 1 => {
            let name = "single-profile-handler".to_owned();
            return Ok(WiredHandler {
                handler: Box::new(SingleProfileHandler),
                name: (name.clone(), name),
                primary_port: None,
            });
        }
        [] => {
            return Err(ConfigError(format!(
            "plugins: {} scheduling profiles need a profile handler (e.g. disagg-profile-handler)",
            profiles.len()
        )))
        }
        [one] => *one,
        [first, second, ..] => {
            return Err(ConfigError(format!(
                "plugins: one profile handler allowed, got '{}' and '{}'",
                first.0.spec.name(),
                second.0.spec.name()
            )))
        }
    };
    let name = (b.spec.name().to_owned(), b.spec.kind.clone());
    let err = |what: String| ConfigError(format!("plugin '{}' ({}): {what}", name.0, name.1));
    let one_profile = || {
        if profiles.len() == 1 {
            Ok(())
        } else {
            Err(err(format!(
                "needs exactly one scheduling profile, got {}",
                profiles.len()
            )))
        }
    };
    let (handler, primary_port): (Box<dyn ProfileHandler>, Option<u16>) = match spec {
        HandlerSpec::Single => {
            one_profile()?;
            (Box::new(SingleProfileHandler), None)
        }
        HandlerSpec::DataParallel { primary_port } => {
            one_profile()?;
            (Box::new(DataParallelProfileHandler), Some(*primary_port))
        }
        HandlerSpec::Header {
            header,
            default_profile,
        } => (
            Box::new(HeaderProfileHandler::new(header, default_profile, profiles)),
            None,
        ),
        HandlerSpec::Disagg(d) => (Box::new(disagg(d, built, profiles, &err)?), d.primary_port),
    };
    check_headers_handlers(built, spec)?;
    Ok(WiredHandler {
        handler,
        name,
        primary_port,
    })
}

/// A deprecated headers handler does what the disagg handler does already; it must name the
/// same profiles, or it would stamp headers for stages that never run.
fn check_headers_handlers(built: &[Built], spec: &HandlerSpec) -> Result<(), ConfigError> {
    for b in built {
        let Plugin::HeadersHandler {
            prefill_profile,
            encode_profile,
        } = &b.plugin
        else {
            continue;
        };
        let at = format!("plugin '{}' ({})", b.spec.name(), b.spec.kind);
        let HandlerSpec::Disagg(d) = spec else {
            return Err(ConfigError(format!(
                "{at}: sets disaggregation headers, which needs disagg-profile-handler"
            )));
        };
        for (field, theirs, ours) in [
            ("prefillProfile", prefill_profile, &d.prefill_profile),
            ("encodeProfile", encode_profile, &d.encode_profile),
        ] {
            if theirs != ours {
                return Err(ConfigError(format!(
                    "{at}: parameters.{field} '{theirs}' is not the disagg handler's profile '{ours}'"
                )));
            }
        }
    }
    Ok(())
}

fn disagg(
    d: &DisaggSpec,
    built: &[Built],
    profiles: &[SchedulingProfile],
    err: &dyn Fn(String) -> ConfigError,
) -> Result<DisaggProfileHandler, ConfigError> {
    let position: HashMap<&str, usize> = profiles
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let decode = *position.get(d.decode_profile.as_str()).ok_or_else(|| {
        err(format!(
            "parameters.profiles.decode (decodeProfile): no scheduling profile named '{}'",
            d.decode_profile
        ))
    })?;
    let decider = |field: &str, name: &Option<String>| -> Result<_, ConfigError> {
        name.as_ref()
            .map(|n| {
                find_decider(built, n).ok_or_else(|| {
                    err(format!(
                        "parameters.deciders.{field}: no decider plugin named '{n}'"
                    ))
                })
            })
            .transpose()
    };
    let mut prefill_decider = decider("prefill", &d.prefill_decider)?;
    if let Some(t) = d.threshold {
        prefill_decider = Some(Arc::new(PrefixBasedPdDecider {
            non_cached_tokens: t,
            prompt_tokens: 0,
        }));
    }
    let encode_decider = decider("encode", &d.encode_decider)?;
    let encode = position.get(d.encode_profile.as_str()).copied();
    if encode_decider.is_some() && encode.is_none() {
        return Err(err(format!(
            "parameters.profiles.encode: an encode decider is set but no scheduling profile is named '{}'",
            d.encode_profile
        )));
    }
    Ok(DisaggProfileHandler {
        decode,
        prefill: position.get(d.prefill_profile.as_str()).copied(),
        encode,
        prefill_decider,
        encode_decider,
        prefill_first: d.prefill_first,
    })
}

fn find_decider(built: &[Built], name: &str) -> Option<Arc<dyn PdDecider>> {
    built.iter().find_map(|b| match &b.plugin {
        Plugin::Decider(d) if b.spec.name() == name => Some(d.clone()),
        _ => None,
    })
}
