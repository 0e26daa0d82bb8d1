//! The tenant a row acts in, in a run over many tenants (`--tenants`): the
//! profile names and tenant ids a row's tenant cell may give, the profile
//! rows without one take (`--tenant`), and the one profile whose rows a
//! run keeps (`--tenant`, or one tenant's share of a run over many).
//!
//! A row's tenant is checked with the rest of the row: a cell naming a
//! tenant the profiles do not define makes the row invalid, so a file
//! with such a row sends nothing (unless `--skip-invalid`), and no row can
//! act in a customer's tenant by a typo.

/// The tenants rows may name, and which of them this run keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantNames {
    /// The profile names, in the order of the profiles file.
    names: Vec<String>,
    /// Every profile name and tenant id, lowercase, to the profile's index
    /// (a row may name its tenant by either): each share of a run over many
    /// tenants looks up the tenant of every row of the input.
    index: std::collections::BTreeMap<String, usize>,
    /// `--tenant`: the profile of rows whose tenant cell is blank (or of
    /// every row, in an input without a tenant column).
    fallback: Option<String>,
    /// Only rows of this profile are selected; the others belong to other
    /// runs (`--tenant`, or another tenant's share of the run).
    only: Option<String>,
    /// Rows naming no profile are kept (to be reported invalid): true for
    /// the whole run, false for one tenant's share of it, whose strays the
    /// whole run reports.
    strays: bool,
}

impl TenantNames {
    /// The profiles `(name, tenant id)`, in file order; every row must name one.
    pub fn new(profiles: impl IntoIterator<Item = (String, String)>) -> TenantNames {
        let (names, ids): (Vec<String>, Vec<String>) =
            profiles.into_iter().map(|(n, id)| (n, id.trim().to_ascii_lowercase())).unzip();
        // Names first: a profile named like another's tenant id wins.
        let mut index = std::collections::BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            index.insert(id.clone(), i);
        }
        for (i, name) in names.iter().enumerate() {
            index.insert(name.to_ascii_lowercase(), i);
        }
        TenantNames { names, index, fallback: None, only: None, strays: true }
    }

    /// These names, with `--tenant NAME`: rows with no tenant take it, and
    /// only its rows are selected. `None` when `name` is not a profile.
    pub fn restricted_to(&self, name: &str) -> Option<TenantNames> {
        let name = self.resolve(name).ok()?.to_string();
        Some(TenantNames { fallback: Some(name.clone()), only: Some(name), ..self.clone() })
    }

    /// These names, keeping the rows of profile `name` alone (one tenant's
    /// share of a run over many). `name` is one of [`TenantNames::names`].
    pub fn only(&self, name: &str) -> TenantNames {
        TenantNames { only: Some(name.to_string()), strays: false, ..self.clone() }
    }

    /// The profile names, in file order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The profile every row of this run belongs to, when only one is kept.
    pub fn kept(&self) -> Option<&str> {
        self.only.as_deref()
    }

    /// The profile of rows without a tenant cell (`--tenant`).
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The profile a tenant cell names: by profile name (case folded) or by
    /// tenant id. The error says which names exist.
    pub fn resolve(&self, value: &str) -> Result<&str, String> {
        let value = value.trim();
        let found = match self.index.get(value) {
            Some(i) => Some(*i),
            None => self.index.get(&value.to_ascii_lowercase()).copied(),
        };
        match found {
            Some(i) => Ok(&self.names[i]),
            None => Err(format!(
                "no tenant profile of that name or tenant id in --tenants (profiles: {})",
                list(&self.names)
            )),
        }
    }

    /// The profile of a row with this tenant cell (`None`: blank or
    /// absent), or why it has none.
    pub fn of_cell(&self, cell: Option<&str>) -> Result<&str, String> {
        match cell {
            Some(v) => self.resolve(v),
            None => self.fallback.as_deref().ok_or_else(|| {
                "the row names no tenant and there is no --tenant to act in".to_string()
            }),
        }
    }

    /// Whether a row of profile `tenant` (`None`: it names none of them,
    /// and is invalid) is this run's.
    pub fn keeps(&self, tenant: Option<&str>) -> bool {
        match (&self.only, tenant) {
            (None, _) => true,
            (Some(_), None) => self.strays,
            (Some(only), Some(t)) => t == only,
        }
    }
}

/// The first few names, for a message.
fn list(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut text: Vec<String> =
        names.iter().take(SHOWN).map(|n| crate::text::quote(n).to_string()).collect();
    if names.len() > SHOWN {
        text.push(format!("and {} more", names.len() - SHOWN));
    }
    text.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> TenantNames {
        TenantNames::new([
            ("contoso".to_string(), "00000000-0000-0000-0000-00000000000A".to_string()),
            ("fabrikam".to_string(), "fabrikam.onmicrosoft.com".to_string()),
        ])
    }

    #[test]
    fn a_cell_names_a_profile_by_name_or_tenant_id_and_nothing_else() {
        let t = names();
        assert_eq!(t.resolve(" Contoso "), Ok("contoso"));
        assert_eq!(t.resolve("00000000-0000-0000-0000-00000000000a"), Ok("contoso"));
        assert_eq!(t.resolve("FABRIKAM.onmicrosoft.com"), Ok("fabrikam"));
        let err = t.resolve("contoso2").unwrap_err();
        assert!(err.contains("\"contoso\", \"fabrikam\""), "{err}");
        assert!(t.of_cell(None).is_err());
    }

    #[test]
    fn a_restriction_gives_blank_rows_its_tenant_and_keeps_only_its_rows() {
        let t = names().restricted_to("FABRIKAM").expect("a profile");
        assert_eq!(t.of_cell(None), Ok("fabrikam"));
        assert!(t.keeps(Some("fabrikam")));
        assert!(!t.keeps(Some("contoso")));
        // A row naming no profile stays, to be reported invalid...
        assert!(t.keeps(None));
        assert!(names().restricted_to("nobody").is_none());
        let share = names().only("contoso");
        assert!(share.keeps(Some("contoso")) && !share.keeps(Some("fabrikam")));
        // ... by the whole run, not by one tenant's share of it.
        assert!(!share.keeps(None));
        assert!(share.of_cell(None).is_err());
        assert!(names().keeps(None));
    }
}
