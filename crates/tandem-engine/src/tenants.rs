//! Tenants: the businesses one deployment serves, and which of them owns a number.
//!
//! A [`Tenant`] is one business: its numbers and WABAs, its flows (through its responder),
//! the Cloud API token its sends carry (through its sender), its teams, agents and hook
//! targets (its desk), and what its lanes' decisions read. [`Tenants`] is the directory in
//! force: every part of the engine that acts for a conversation or a number looks its tenant
//! up here, so a reload replaces the directory and the next step of every lane uses it.
//!
//! A single-business deployment is one tenant that owns every number (the catch-all). With
//! declared tenants, a number belongs to the tenant that lists it, else to the tenant that
//! lists its WABA, else to the tenant it was onboarded into (recorded with the number in the
//! store); a number of none of them belongs to nobody, and its webhooks are kept as dead
//! letters.
//!
//! Hook targets are named `{tenant}/{name}` in the outbox (the implicit tenant's keep their
//! plain names), so one deliverer serves every tenant and a delivery always goes to the
//! target of the tenant whose conversation it is about.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tandem_domain::PhoneNumberId;
use tandem_handoff::HookTarget;
use tandem_store::Store;
use tandem_whatsapp::GraphClient;

use crate::config::EngineConfig;
use crate::desk::Desk;
use crate::responder::Responder;
use crate::sender::Sender;
use crate::turn::Settings;

/// The id of the implicit tenant of a single-business deployment.
pub const DEFAULT_TENANT: &str = tandem_store::DEFAULT_TENANT;

/// One business and the parts its conversations run on.
#[derive(Debug)]
pub struct Tenant {
    /// The tenant's id: lowercase letters, digits, `-` and `_`.
    pub id: String,
    /// Its id as a metrics label (cloned without allocating).
    pub label: ::metrics::SharedString,
    /// Phone number ids it owns.
    pub numbers: Vec<PhoneNumberId>,
    /// WABAs it owns: their numbers are its numbers.
    pub wabas: Vec<String>,
    /// Runs its flows; none when it has no bot (lanes only record).
    pub responder: Option<Responder>,
    /// Sends its outboxes with its token; none when it cannot send.
    pub sender: Option<Sender>,
    /// The Graph API with its token (onboarding checks, the owner's reminder).
    pub graph: Option<GraphClient>,
    /// Its teams, agents and hook targets.
    pub desk: Desk,
    /// What its lanes' decisions read.
    pub settings: Settings,
    /// The owner's reminder to open the Business App, when configured.
    pub reminder: Option<crate::health::Reminder>,
    /// How long its transcripts are kept, when not the deployment's `retention.transcripts`.
    pub transcripts_kept: Option<std::time::Duration>,
}

/// The parts a tenant is built from.
#[derive(Debug, Default)]
pub struct TenantParts {
    /// Phone number ids it owns.
    pub numbers: Vec<PhoneNumberId>,
    /// WABAs it owns.
    pub wabas: Vec<String>,
    /// Runs its flows.
    pub responder: Option<Responder>,
    /// Sends its outboxes.
    pub sender: Option<Sender>,
    /// The Graph API with its token.
    pub graph: Option<GraphClient>,
    /// Its teams, agents and hook targets.
    pub desk: Desk,
    /// The owner's reminder.
    pub reminder: Option<crate::health::Reminder>,
    /// How long its transcripts are kept (`None`: as the deployment says).
    pub transcripts_kept: Option<std::time::Duration>,
}

impl Tenant {
    /// Builds tenant `id` from its parts; its lanes follow `config`.
    pub fn new(id: &str, parts: TenantParts, config: &EngineConfig) -> Self {
        let settings = Settings::new(config, &parts.desk, parts.responder.as_ref());
        Self {
            id: id.to_owned(),
            label: ::metrics::SharedString::from(std::sync::Arc::<str>::from(id)),
            numbers: parts.numbers,
            wabas: parts.wabas,
            responder: parts.responder,
            sender: parts.sender,
            graph: parts.graph,
            desk: parts.desk,
            settings,
            reminder: parts.reminder,
            transcripts_kept: parts.transcripts_kept,
        }
    }

    /// The name its hook target `name` has in the outbox.
    pub fn hook_name(&self, name: &str) -> String {
        if self.id == DEFAULT_TENANT {
            name.to_owned()
        } else {
            format!("{}/{name}", self.id)
        }
    }

    /// The store key of its agent `agent` (agents of two tenants may share a name).
    pub fn agent_key(&self, agent: &str) -> String {
        self.hook_name(agent)
    }
}

/// Returns true when `id` is a valid tenant id: 1 to 63 of `a-z`, `0-9`, `-`, `_`, starting
/// with a letter or a digit.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !id.starts_with(['-', '_'])
}

/// The tenants in force at one moment.
#[derive(Debug, Default)]
struct Directory {
    tenants: BTreeMap<String, Arc<Tenant>>,
    numbers: HashMap<PhoneNumberId, Arc<Tenant>>,
    wabas: HashMap<String, Arc<Tenant>>,
    /// The tenant of every number in a single-business deployment.
    catch_all: Option<Arc<Tenant>>,
}

/// Why a set of tenants was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// Two tenants claim the same number or WABA.
    #[error("{what} {value} is claimed by both tenant {first} and tenant {second}")]
    Claimed {
        /// `number` or `WABA`.
        what: &'static str,
        /// The number or WABA.
        value: String,
        /// One tenant.
        first: String,
        /// The other.
        second: String,
    },
    /// A tenant id that is not valid.
    #[error(
        "{0:?} is not a tenant id: use 1 to 63 lowercase letters, digits, '-' and '_', starting with a letter or digit"
    )]
    BadId(String),
    /// Two tenants with one id.
    #[error("tenant {0} is declared twice")]
    Duplicate(String),
}

impl Directory {
    fn build(tenants: Vec<Arc<Tenant>>, catch_all: Option<&str>) -> Result<Self, DirectoryError> {
        let mut dir = Self::default();
        for tenant in tenants {
            if !valid_id(&tenant.id) {
                return Err(DirectoryError::BadId(tenant.id.clone()));
            }
            for number in &tenant.numbers {
                if let Some(first) = dir.numbers.insert(number.clone(), Arc::clone(&tenant)) {
                    return Err(DirectoryError::Claimed {
                        what: "number",
                        value: number.to_string(),
                        first: first.id.clone(),
                        second: tenant.id.clone(),
                    });
                }
            }
            for waba in &tenant.wabas {
                if let Some(first) = dir.wabas.insert(waba.clone(), Arc::clone(&tenant)) {
                    return Err(DirectoryError::Claimed {
                        what: "WABA",
                        value: waba.clone(),
                        first: first.id.clone(),
                        second: tenant.id.clone(),
                    });
                }
            }
            if dir
                .tenants
                .insert(tenant.id.clone(), Arc::clone(&tenant))
                .is_some()
            {
                return Err(DirectoryError::Duplicate(tenant.id.clone()));
            }
        }
        dir.catch_all = catch_all.and_then(|id| dir.tenants.get(id).cloned());
        Ok(dir)
    }
}

/// What places a number no tenant lists: resolved against the tenants in force at each
/// lookup, so a reload that moves a WABA moves its numbers too.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    /// The number's WABA.
    Waba(String),
    /// The tenant it was onboarded into.
    Onboarded(String),
}

/// The directory of tenants in force; cheap to clone, shared by every part of the engine.
#[derive(Debug, Clone)]
pub struct Tenants {
    current: Arc<RwLock<Arc<Directory>>>,
    /// What is known of numbers no tenant lists: their WABA, or the tenant they were
    /// onboarded into (read from the store, or learnt by this process).
    known: Arc<Mutex<HashMap<PhoneNumberId, Known>>>,
    /// Removed tenants: they own nothing, but the hooks about their erasure still go out.
    retired: Arc<Mutex<HashMap<String, Arc<Tenant>>>>,
    store: Option<Arc<dyn Store>>,
}

impl Default for Tenants {
    fn default() -> Self {
        Self::single(Tenant::new(
            DEFAULT_TENANT,
            TenantParts::default(),
            &EngineConfig::default(),
        ))
    }
}

impl Tenants {
    /// A single-business deployment: `tenant` owns every number.
    pub fn single(tenant: Tenant) -> Self {
        let id = tenant.id.clone();
        let dir = Directory::build(vec![Arc::new(tenant)], Some(&id)).unwrap_or_default();
        Self::over(dir)
    }

    /// Declared tenants: each owns the numbers and WABAs it lists.
    ///
    /// # Errors
    /// A bad or repeated id, or a number or WABA two tenants claim.
    pub fn declared(tenants: Vec<Arc<Tenant>>) -> Result<Self, DirectoryError> {
        Ok(Self::over(Directory::build(tenants, None)?))
    }

    fn over(dir: Directory) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(dir))),
            known: Arc::default(),
            retired: Arc::default(),
            store: None,
        }
    }

    /// Looks numbers no tenant lists up in `store`, where onboarding records their tenant.
    #[must_use]
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    fn dir(&self) -> Arc<Directory> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `tenants` in force (declared tenants); on error the tenants in force stay.
    ///
    /// # Errors
    /// As [`Tenants::declared`].
    pub fn replace(&self, tenants: Vec<Arc<Tenant>>) -> Result<(), DirectoryError> {
        let dir = Directory::build(tenants, None)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(dir);
        Ok(())
    }

    /// True when one tenant owns every number (a single-business deployment).
    pub fn is_single(&self) -> bool {
        self.dir().catch_all.is_some()
    }

    /// The tenant `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Tenant>> {
        self.dir().tenants.get(id).cloned()
    }

    /// Every tenant, by id.
    pub fn all(&self) -> Vec<Arc<Tenant>> {
        self.dir().tenants.values().cloned().collect()
    }

    /// The tenant owning `number` from what is in memory: the catch-all, the tenant listing
    /// it, or the one it was onboarded into as last read. `waba` (when the webhook named it)
    /// is tried when no tenant lists the number.
    pub fn owner(&self, number: &PhoneNumberId, waba: Option<&str>) -> Option<Arc<Tenant>> {
        // Looked up under the read lock: no count on the directory is taken on this path.
        let dir = self.current.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = &dir.catch_all {
            return Some(Arc::clone(t));
        }
        if let Some(t) = dir.numbers.get(number) {
            return Some(Arc::clone(t));
        }
        if let Some(t) = waba.and_then(|w| dir.wabas.get(w)) {
            return Some(Arc::clone(t));
        }
        let known = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(number)
            .cloned()?;
        match known {
            Known::Waba(w) => dir.wabas.get(&w).cloned(),
            Known::Onboarded(id) => dir.tenants.get(&id).cloned(),
        }
    }

    /// The tenant owning `number`, reading the store for a number no tenant lists (the
    /// tenant it was onboarded into, or its WABA as recorded). `None`: nobody's.
    pub async fn of_number(&self, number: &PhoneNumberId) -> Option<Arc<Tenant>> {
        if let Some(t) = self.owner(number, None) {
            return Some(t);
        }
        let store = self.store.as_ref()?;
        let state = match store.number(number).await {
            Ok(state) => state?,
            Err(error) => {
                tracing::warn!(%number, %error, "reading the number's tenant failed");
                return None;
            }
        };
        let onboarded = state.onboarding.and_then(|o| o.tenant);
        let known = match (onboarded, state.waba_id) {
            (Some(id), _) => Known::Onboarded(id),
            (None, Some(waba)) => Known::Waba(waba),
            // Nothing known yet: asked again next time.
            (None, None) => return None,
        };
        self.learn(number, known);
        self.owner(number, None)
    }

    fn learn(&self, number: &PhoneNumberId, known: Known) {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(number.clone(), known);
    }

    /// Records that `number` was onboarded into tenant `id`.
    pub fn remember(&self, number: &PhoneNumberId, id: &str) {
        self.learn(number, Known::Onboarded(id.to_owned()));
    }

    /// Records that `number` belongs to WABA `waba` (as a webhook said).
    pub fn note_waba(&self, number: &PhoneNumberId, waba: &str) {
        self.learn(number, Known::Waba(waba.to_owned()));
    }

    /// The hook target named `name` in the outbox (`{tenant}/{name}`, or a plain name of
    /// the implicit tenant).
    pub fn hook_target(&self, name: &str) -> Option<HookTarget> {
        let id = Self::tenant_of_hook(name);
        let tenant = self.dir().tenants.get(id).cloned().or_else(|| {
            self.retired
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(id)
                .cloned()
        })?;
        tenant.desk.hooks.target(name).cloned()
    }

    /// A tenant removed by this process (see [`Tenants::retire`]).
    pub fn retired(&self, id: &str) -> Option<Arc<Tenant>> {
        self.retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Keeps `tenant`'s hook targets reachable after it is removed from the directory, so
    /// the deliveries about its erasure still go out (until this process stops).
    pub fn retire(&self, tenant: Arc<Tenant>) {
        self.retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant.id.clone(), tenant);
    }

    /// True when some tenant has a hook target.
    pub fn any_hooks(&self) -> bool {
        self.dir()
            .tenants
            .values()
            .any(|t| !t.desk.hooks.is_empty())
    }

    /// True when some tenant routes conversations to agents.
    pub fn any_routing(&self) -> bool {
        self.dir().tenants.values().any(|t| t.desk.routing.routes())
    }

    /// The tenant whose outbox name `target` is (see [`Tenant::hook_name`]).
    pub fn tenant_of_hook(target: &str) -> &str {
        target.split_once('/').map_or(DEFAULT_TENANT, |(t, _)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str, numbers: &[&str], wabas: &[&str]) -> Arc<Tenant> {
        Arc::new(plain(id, numbers, wabas))
    }

    fn plain(id: &str, numbers: &[&str], wabas: &[&str]) -> Tenant {
        Tenant::new(
            id,
            TenantParts {
                numbers: numbers
                    .iter()
                    .map(|n| PhoneNumberId::parse(*n).unwrap())
                    .collect(),
                wabas: wabas.iter().map(|w| (*w).to_owned()).collect(),
                ..TenantParts::default()
            },
            &EngineConfig::default(),
        )
    }

    #[test]
    fn a_number_belongs_to_the_tenant_listing_it_or_its_waba() {
        let tenants = Tenants::declared(vec![
            tenant("acme", &["111"], &["w-acme"]),
            tenant("bolt", &["222"], &[]),
        ])
        .unwrap();
        let id = |n: &str, w: Option<&str>| {
            tenants
                .owner(&PhoneNumberId::parse(n).unwrap(), w)
                .map(|t| t.id.clone())
        };
        assert_eq!(id("111", None).as_deref(), Some("acme"));
        assert_eq!(id("222", Some("w-acme")).as_deref(), Some("bolt"));
        assert_eq!(id("333", Some("w-acme")).as_deref(), Some("acme"));
        assert_eq!(id("333", None), None);
        assert!(!tenants.is_single());
    }

    #[test]
    fn the_single_tenant_owns_every_number() {
        let tenants = Tenants::default();
        assert!(tenants.is_single());
        let owner = tenants
            .owner(&PhoneNumberId::parse("999").unwrap(), None)
            .unwrap();
        assert_eq!(owner.id, DEFAULT_TENANT);
        assert_eq!(owner.hook_name("crm"), "crm");
    }

    #[test]
    fn claims_twice_and_bad_ids_are_refused_and_the_running_set_stays() {
        let tenants = Tenants::declared(vec![tenant("acme", &["111"], &[])]).unwrap();
        let err = tenants
            .replace(vec![
                tenant("acme", &["111"], &[]),
                tenant("bolt", &["111"], &[]),
            ])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "number 111 is claimed by both tenant acme and tenant bolt"
        );
        assert!(matches!(
            tenants.replace(vec![tenant("Acme/x", &[], &[])]),
            Err(DirectoryError::BadId(_))
        ));
        assert!(matches!(
            tenants.replace(vec![tenant("a", &[], &[]), tenant("a", &[], &[])]),
            Err(DirectoryError::Duplicate(_))
        ));
        assert_eq!(
            tenants
                .owner(&PhoneNumberId::parse("111").unwrap(), None)
                .map(|t| t.id.clone())
                .as_deref(),
            Some("acme")
        );
    }

    #[test]
    fn hook_targets_are_found_by_their_outbox_name() {
        let mut acme = plain("acme", &[], &[]);
        acme.desk.hooks = Arc::new(tandem_handoff::Hooks::new(
            vec![HookTarget {
                name: "acme/crm".into(),
                url: "http://127.0.0.1:1/".into(),
                secret: "s".into(),
                teams: Vec::new(),
                events: Vec::new(),
            }],
            5,
        ));
        assert_eq!(acme.hook_name("crm"), "acme/crm");
        let tenants = Tenants::declared(vec![Arc::new(acme), tenant("bolt", &[], &[])]).unwrap();
        assert!(tenants.hook_target("acme/crm").is_some());
        assert!(tenants.hook_target("bolt/crm").is_none());
        assert!(tenants.hook_target("crm").is_none());
        assert_eq!(Tenants::tenant_of_hook("acme/crm"), "acme");
        assert_eq!(Tenants::tenant_of_hook("crm"), DEFAULT_TENANT);
    }
}
