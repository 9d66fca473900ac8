//! Which customer a webhook event is about: the identifiers it carries, resolved to a
//! customer id through the store's alias table, with a process-local cache in front.
//!
//! An `alias → customer` pair stays true until the customer is erased, and every erasure
//! raises the store's identity epoch. The cache remembers the epoch its pairs were read
//! under, and ingest hands that epoch to the store with the delivery: when an erasure came in
//! between, the store refuses the delivery ([`StoreError::StaleIdentities`]), the cache
//! starts again under the new epoch ([`Identities::refresh`]) and the delivery is resolved
//! again. A lookup whose every alias is cached with one customer is answered without the
//! store. Anything else — a new customer, a new alias to link, a conflict, an identity
//! change — goes to the store, which decides atomically. Resolution is idempotent, so a crash
//! between resolving and storing the delivery loses nothing: Meta's retry resolves to the
//! same customer.
//!
//! An erased customer's identifiers leave tombstones. Once the epoch shows an erasure has
//! happened, a lookup that goes to the store also reads its aliases' tombstones, and the
//! cache keeps the erasure time with each pair, so ingress can tell a late webhook (older
//! than the erasure) from a new message at no cost on cache hits.
//!
//! A store that lost data (a Redis restarted without persistence) shows as failed store
//! calls, so any store error empties the cache ([`Identities::forget`]): the next lookups ask
//! the store again, which re-creates what it lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tandem_domain::{Alias, CustomerId, CustomerLookup, Resolved, Timestamp};
use tandem_store::{Store, StoreError};

use crate::metrics;

/// How many aliases the cache holds before it starts again empty.
const CACHE_CAP: usize = 200_000;

/// Resolves lookups for one tenant, remembering answers.
#[derive(Debug, Clone)]
pub(crate) struct Identities {
    store: Arc<dyn Store>,
    tenant: String,
    cache: Arc<Mutex<Cache>>,
}

/// Cached pairs and the identity epoch they were read under (`None`: not read yet).
#[derive(Debug, Default)]
struct Cache {
    epoch: Option<u64>,
    pairs: HashMap<Alias, Pair>,
}

/// What the cache knows of an alias: its customer, and when an earlier owner was erased.
#[derive(Debug, Clone)]
struct Pair {
    customer: CustomerId,
    erased_at: Option<Timestamp>,
}

/// The customers of a delivery's lookups, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resolution {
    /// The customer of each lookup.
    pub(crate) customers: Vec<CustomerId>,
    /// When an earlier customer with one of each lookup's identifiers was erased: events
    /// older than that are late webhooks of the erased customer.
    pub(crate) erased_at: Vec<Option<Timestamp>>,
    /// The identity epoch the answers hold under; `None` when there was nothing to resolve.
    pub(crate) epoch: Option<u64>,
}

impl Identities {
    pub(crate) fn new(store: Arc<dyn Store>, tenant: &str) -> Self {
        Self {
            store,
            tenant: tenant.to_owned(),
            cache: Arc::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Empties the cache: the store failed, and may have lost what the cache remembers.
    pub(crate) fn forget(&self) {
        let mut cache = self.cache();
        cache.pairs.clear();
        cache.epoch = None;
    }

    /// Starts again under `epoch`, the store's after an erasure, unless already there.
    pub(crate) fn refresh(&self, epoch: u64) {
        let mut cache = self.cache();
        if cache.epoch.is_none_or(|e| e < epoch) {
            cache.pairs.clear();
            cache.epoch = Some(epoch);
        }
    }

    /// The epoch the cache holds pairs under, read from the store the first time.
    async fn epoch(&self) -> Result<u64, StoreError> {
        if let Some(epoch) = self.cache().epoch {
            return Ok(epoch);
        }
        let epoch = self.store.identity_epoch().await?;
        let mut cache = self.cache();
        Ok(*cache.epoch.get_or_insert(epoch))
    }

    /// Returns the customer of each lookup, in order, and the epoch the answers hold under.
    ///
    /// # Errors
    /// The store's error (the cache is emptied).
    pub(crate) async fn resolve(
        &self,
        lookups: &[&CustomerLookup],
    ) -> Result<Resolution, StoreError> {
        if lookups.is_empty() {
            return Ok(Resolution::default());
        }
        let epoch = match self.epoch().await {
            Ok(epoch) => epoch,
            Err(error) => {
                self.forget();
                return Err(error);
            }
        };
        let (mut out, mut erased_at): (Vec<Option<CustomerId>>, Vec<Option<Timestamp>>) = {
            let cache = self.cache();
            lookups
                .iter()
                .map(|l| (cached(&cache.pairs, l), erased_of(&cache.pairs, l)))
                .unzip()
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
            // Tombstones exist only once an erasure happened (the epoch moved).
            let mut stones = Vec::with_capacity(missing.len());
            for lookup in &missing {
                let mut latest: Option<Timestamp> = None;
                if epoch > 0 {
                    for alias in lookup.find.iter().chain(&lookup.link) {
                        match self.store.tombstone(&self.tenant, alias).await {
                            Ok(Some(stone)) => {
                                latest = latest.max(Some(stone.erased_at));
                            }
                            Ok(None) => {}
                            Err(error) => {
                                self.forget();
                                return Err(error);
                            }
                        }
                    }
                }
                stones.push(latest);
            }
            let mut cache = self.cache();
            // Pairs read under an epoch an erasure has ended must not be cached.
            let current = cache.epoch == Some(epoch);
            if cache.pairs.len() + missing.len() * 3 > CACHE_CAP {
                cache.pairs.clear();
            }
            let mut answers = missing.iter().zip(answers).zip(stones);
            for (slot, erased) in out
                .iter_mut()
                .zip(erased_at.iter_mut())
                .filter(|(s, _)| s.is_none())
            {
                let Some(((lookup, answer), stone)) = answers.next() else {
                    break;
                };
                record(&answer);
                // Only aliases the customer owns are cached; a conflicting one belongs to
                // someone else.
                for alias in lookup.link.iter().filter(|_| current) {
                    if !answer.conflicts.iter().any(|(a, _)| a == alias) {
                        let pair = Pair {
                            customer: answer.customer.clone(),
                            erased_at: stone,
                        };
                        cache.pairs.insert(alias.clone(), pair);
                    }
                }
                *erased = stone;
                *slot = Some(answer.customer);
            }
        }
        let customers = out
            .into_iter()
            .map(|c| c.ok_or_else(|| StoreError::Protocol("a lookup was left unresolved".into())))
            .collect::<Result<_, _>>()?;
        Ok(Resolution {
            customers,
            erased_at,
            epoch: Some(epoch),
        })
    }
}

/// The customer every alias of `lookup` is cached with, if there is exactly one.
fn cached(cache: &HashMap<Alias, Pair>, lookup: &CustomerLookup) -> Option<CustomerId> {
    let mut customer: Option<&CustomerId> = None;
    for alias in &lookup.link {
        let owner = &cache.get(alias)?.customer;
        if customer.is_some_and(|c| c != owner) {
            return None;
        }
        customer = Some(owner);
    }
    customer.cloned()
}

/// The latest erasure the cache knows of among `lookup`'s aliases.
fn erased_of(cache: &HashMap<Alias, Pair>, lookup: &CustomerLookup) -> Option<Timestamp> {
    lookup
        .link
        .iter()
        .filter_map(|a| cache.get(a)?.erased_at)
        .max()
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
