//! Which customer a webhook event is about: the identifiers it carries, resolved to a
//! customer id through the store's alias table, with a process-local cache in front.
//!
//! Aliases are never moved or removed (see `tandem_store`'s customer rule), so an
//! `alias → customer` pair once read stays true: a lookup whose every alias is cached with one
//! customer is answered without the store. Anything else — a new customer, a new alias to
//! link, a conflict, an identity change — goes to the store, which decides atomically.
//! Resolution is idempotent, so a crash between resolving and storing the delivery loses
//! nothing: Meta's retry resolves to the same customer.
//!
//! The one way a cached pair can stop being true is a store that lost data (a Redis restarted
//! without persistence). Such a loss shows as failed store calls, so any store error empties
//! the cache ([`Identities::forget`]): the next lookups ask the store again, which re-creates
//! what it lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tandem_domain::{Alias, CustomerId, CustomerLookup, Resolved};
use tandem_store::{Store, StoreError};

use crate::metrics;

/// How many aliases the cache holds before it starts again empty.
const CACHE_CAP: usize = 200_000;

/// Resolves lookups for one tenant, remembering answers.
#[derive(Debug, Clone)]
pub(crate) struct Identities {
    store: Arc<dyn Store>,
    tenant: String,
    cache: Arc<Mutex<HashMap<Alias, CustomerId>>>,
}

impl Identities {
    pub(crate) fn new(store: Arc<dyn Store>, tenant: &str) -> Self {
        Self {
            store,
            tenant: tenant.to_owned(),
            cache: Arc::default(),
        }
    }

    /// Empties the cache: the store failed, and may have lost what the cache remembers.
    pub(crate) fn forget(&self) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Returns the customer of each lookup, in order.
    ///
    /// # Errors
    /// The store's error (the cache is emptied).
    pub(crate) async fn resolve(
        &self,
        lookups: &[&CustomerLookup],
    ) -> Result<Vec<CustomerId>, StoreError> {
        let mut out: Vec<Option<CustomerId>> = {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            lookups.iter().map(|l| cached(&cache, l)).collect()
        };
        let missing: Vec<CustomerLookup> = lookups
            .iter()
            .zip(&out)
            .filter(|(_, hit)| hit.is_none())
            .map(|(l, _)| (*l).clone())
            .collect();
        if !missing.is_empty() {
            let answers = match self.store.resolve_customers(&self.tenant, &missing).await {
                Ok(answers) => answers,
                Err(error) => {
                    self.forget();
                    return Err(error);
                }
            };
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() + missing.len() * 3 > CACHE_CAP {
                cache.clear();
            }
            let mut answers = missing.iter().zip(answers);
            for slot in out.iter_mut().filter(|s| s.is_none()) {
                let Some((lookup, answer)) = answers.next() else {
                    break;
                };
                record(&answer);
                // Only aliases the customer owns are cached; a conflicting one belongs to
                // someone else.
                for alias in &lookup.link {
                    if !answer.conflicts.iter().any(|(a, _)| a == alias) {
                        cache.insert(alias.clone(), answer.customer.clone());
                    }
                }
                *slot = Some(answer.customer);
            }
        }
        out.into_iter()
            .map(|c| c.ok_or_else(|| StoreError::Protocol("a lookup was left unresolved".into())))
            .collect()
    }
}

/// The customer every alias of `lookup` is cached with, if there is exactly one.
fn cached(cache: &HashMap<Alias, CustomerId>, lookup: &CustomerLookup) -> Option<CustomerId> {
    let mut customer: Option<&CustomerId> = None;
    for alias in &lookup.link {
        let owner = cache.get(alias)?;
        if customer.is_some_and(|c| c != owner) {
            return None;
        }
        customer = Some(owner);
    }
    customer.cloned()
}

fn record(answer: &Resolved) {
    if answer.created {
        ::metrics::counter!(metrics::CUSTOMERS_CREATED).increment(1);
    } else {
        for alias in &answer.linked {
            ::metrics::counter!(metrics::ALIASES_LINKED, "kind" => alias.kind.as_str())
                .increment(1);
        }
    }
    for (alias, owner) in &answer.conflicts {
        ::metrics::counter!(metrics::ALIAS_CONFLICTS, "kind" => alias.kind.as_str()).increment(1);
        // Customer ids only: identifiers themselves are personal data.
        tracing::warn!(
            kind = alias.kind.as_str(),
            routed_to = %answer.customer,
            owner = %owner,
            "a payload paired identifiers of two customers; not merged, routed by the most trusted one"
        );
    }
}
