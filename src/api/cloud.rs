//! The clouds MDE runs in, and for each one the three addresses a client
//! needs: the API host, the Entra ID login host and the token scope.
//!
//! The table follows the team's API reference (§2 hosts, §3 authentication).
//! Government clouds are not simulated and their token audience is not
//! documented (decision P1): for them the scope is the cloud's own API host +
//! `/.default`, the value the public integrations use. `--api-url`,
//! `--login-url` and the configuration override any of these.

use std::fmt;
use std::str::FromStr;

use super::action::fold_name;

/// Token scope for every commercial cloud: Microsoft's pages request this
/// audience even when calling the newer `api.security.microsoft.com` hosts.
pub(crate) const COMMERCIAL_SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";

/// Where an MDE tenant lives: the commercial geography or a US government cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Cloud {
    /// Commercial, geo-routed: `api.security.microsoft.com`.
    #[default]
    Global,
    /// Commercial, United States data centres.
    Us,
    /// Commercial, European Union data centres.
    Eu,
    /// Commercial, United Kingdom data centres.
    Uk,
    /// Commercial, Australia data centres.
    Au,
    /// Commercial, Switzerland data centres.
    Swa,
    /// Commercial, India data centres.
    Ina,
    /// Commercial, United Arab Emirates data centres.
    Aea,
    /// US Government Community Cloud (commercial login, gov API host).
    Gcc,
    /// US Government Community Cloud High (gov login and API hosts).
    GccHigh,
    /// US Department of Defense (gov login and API hosts).
    Dod,
}

impl Cloud {
    /// Every cloud, in the order the help text lists them.
    pub const ALL: [Cloud; 11] = [
        Cloud::Global,
        Cloud::Us,
        Cloud::Eu,
        Cloud::Uk,
        Cloud::Au,
        Cloud::Swa,
        Cloud::Ina,
        Cloud::Aea,
        Cloud::Gcc,
        Cloud::GccHigh,
        Cloud::Dod,
    ];

    /// The name users type (`--cloud gcc-high`).
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Global => "global",
            Cloud::Us => "us",
            Cloud::Eu => "eu",
            Cloud::Uk => "uk",
            Cloud::Au => "au",
            Cloud::Swa => "swa",
            Cloud::Ina => "ina",
            Cloud::Aea => "aea",
            Cloud::Gcc => "gcc",
            Cloud::GccHigh => "gcc-high",
            Cloud::Dod => "dod",
        }
    }

    /// The API host, without a path (the client adds `/api`).
    pub fn api_base(self) -> &'static str {
        match self {
            Cloud::Global => "https://api.security.microsoft.com",
            Cloud::Us => "https://us.api.security.microsoft.com",
            Cloud::Eu => "https://eu.api.security.microsoft.com",
            Cloud::Uk => "https://uk.api.security.microsoft.com",
            Cloud::Au => "https://au.api.security.microsoft.com",
            Cloud::Swa => "https://swa.api.security.microsoft.com",
            Cloud::Ina => "https://ina.api.security.microsoft.com",
            Cloud::Aea => "https://aea.api.security.microsoft.com",
            Cloud::Gcc => "https://api-gcc.securitycenter.microsoft.us",
            Cloud::GccHigh | Cloud::Dod => "https://api-gov.securitycenter.microsoft.us",
        }
    }

    /// The Entra ID login host: `.us` for GCC High and DoD, the commercial
    /// one everywhere else (GCC included).
    pub fn login_base(self) -> &'static str {
        match self {
            Cloud::GccHigh | Cloud::Dod => "https://login.microsoftonline.us",
            _ => "https://login.microsoftonline.com",
        }
    }

    /// The OAuth2 scope to request a token for.
    ///
    /// Commercial clouds: [`COMMERCIAL_SCOPE`], as every Microsoft sample
    /// requests. Government clouds: the cloud's API host + `/.default`; the
    /// gov audience is undocumented (reference §2, decision P1), this is what
    /// public integrations use, and a tenant that needs another value sets it
    /// in the configuration.
    pub fn scope(self) -> &'static str {
        match self {
            Cloud::Gcc => "https://api-gcc.securitycenter.microsoft.us/.default",
            Cloud::GccHigh | Cloud::Dod => "https://api-gov.securitycenter.microsoft.us/.default",
            _ => COMMERCIAL_SCOPE,
        }
    }

    /// The Microsoft Graph host, without a path (the client adds
    /// `/v1.0`): where Advanced Hunting queries go (`--query`). GCC runs on
    /// the commercial Graph; GCC High is Graph's US Government L4 host and
    /// DoD its L5 host (Graph's national cloud deployments page). Graph's
    /// China host (`microsoftgraph.chinacloudapi.cn`) has no cloud here:
    /// MDE has no China cloud, and runHuntingQuery is not offered there.
    pub fn graph_base(self) -> &'static str {
        match self {
            Cloud::GccHigh => "https://graph.microsoft.us",
            Cloud::Dod => "https://dod-graph.microsoft.us",
            _ => "https://graph.microsoft.com",
        }
    }

    /// The OAuth2 scope of a Graph token: the cloud's Graph host +
    /// `/.default` (an app-only token carries the app's Graph application
    /// permissions, `ThreatHunting.Read.All` among them).
    pub fn graph_scope(self) -> &'static str {
        match self {
            Cloud::GccHigh => "https://graph.microsoft.us/.default",
            Cloud::Dod => "https://dod-graph.microsoft.us/.default",
            _ => "https://graph.microsoft.com/.default",
        }
    }

    /// True for the US government clouds (GCC, GCC High, DoD).
    pub fn is_government(self) -> bool {
        matches!(self, Cloud::Gcc | Cloud::GccHigh | Cloud::Dod)
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for a cloud name that matches no known cloud.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown cloud {0:?} (expected global, us, eu, uk, au, swa, ina, aea, gcc, gcc-high or dod)"
)]
pub struct UnknownCloud(pub String);

impl FromStr for Cloud {
    type Err = UnknownCloud;

    /// Accepts the names of [`Cloud::name`], ignoring case, spaces, `-` and
    /// `_` (`GCC_High`, `gcchigh`), plus `commercial` for `global`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let cloud = match fold_name(s).as_str() {
            "global" | "commercial" => Cloud::Global,
            "us" => Cloud::Us,
            "eu" => Cloud::Eu,
            "uk" => Cloud::Uk,
            "au" => Cloud::Au,
            "swa" => Cloud::Swa,
            "ina" => Cloud::Ina,
            "aea" => Cloud::Aea,
            "gcc" => Cloud::Gcc,
            "gcchigh" => Cloud::GccHigh,
            "dod" => Cloud::Dod,
            _ => return Err(UnknownCloud(s.to_string())),
        };
        Ok(cloud)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_reference() {
        assert_eq!(Cloud::Global.api_base(), "https://api.security.microsoft.com");
        assert_eq!(Cloud::Us.api_base(), "https://us.api.security.microsoft.com");
        assert_eq!(Cloud::Eu.api_base(), "https://eu.api.security.microsoft.com");
        assert_eq!(Cloud::Uk.api_base(), "https://uk.api.security.microsoft.com");
        assert_eq!(Cloud::Au.api_base(), "https://au.api.security.microsoft.com");
        assert_eq!(Cloud::Swa.api_base(), "https://swa.api.security.microsoft.com");
        assert_eq!(Cloud::Ina.api_base(), "https://ina.api.security.microsoft.com");
        assert_eq!(Cloud::Aea.api_base(), "https://aea.api.security.microsoft.com");
        assert_eq!(Cloud::Gcc.api_base(), "https://api-gcc.securitycenter.microsoft.us");
        assert_eq!(Cloud::GccHigh.api_base(), "https://api-gov.securitycenter.microsoft.us");
        assert_eq!(Cloud::Dod.api_base(), "https://api-gov.securitycenter.microsoft.us");

        for c in Cloud::ALL {
            let login = c.login_base();
            match c {
                Cloud::GccHigh | Cloud::Dod => {
                    assert_eq!(login, "https://login.microsoftonline.us")
                }
                _ => assert_eq!(login, "https://login.microsoftonline.com", "{c}"),
            }
            if c.is_government() {
                assert_eq!(c.scope(), format!("{}/.default", c.api_base()), "{c}");
            } else {
                assert_eq!(c.scope(), COMMERCIAL_SCOPE, "{c}");
            }
            assert!(c.api_base().starts_with("https://") && !c.api_base().ends_with('/'));
        }
        assert_eq!(Cloud::default(), Cloud::Global);
    }

    #[test]
    fn graph_hosts_follow_the_national_cloud_deployments() {
        for c in Cloud::ALL {
            let want = match c {
                Cloud::GccHigh => "https://graph.microsoft.us",
                Cloud::Dod => "https://dod-graph.microsoft.us",
                _ => "https://graph.microsoft.com",
            };
            assert_eq!(c.graph_base(), want, "{c}");
            assert_eq!(c.graph_scope(), format!("{want}/.default"), "{c}");
        }
    }

    #[test]
    fn parses_names_and_round_trips_display() {
        for c in Cloud::ALL {
            assert_eq!(c.to_string().parse::<Cloud>(), Ok(c));
            assert_eq!(c.name().to_uppercase().parse::<Cloud>(), Ok(c));
        }
        assert_eq!("GCC_High".parse::<Cloud>(), Ok(Cloud::GccHigh));
        assert_eq!("gcchigh".parse::<Cloud>(), Ok(Cloud::GccHigh));
        assert_eq!("commercial".parse::<Cloud>(), Ok(Cloud::Global));
        let err = "mars".parse::<Cloud>().unwrap_err();
        assert!(err.to_string().contains("\"mars\"") && err.to_string().contains("gcc-high"));
        assert!("".parse::<Cloud>().is_err());
    }
}
