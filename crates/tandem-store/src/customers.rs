//! Customer identity resolution shared by both backends: aliases (phone, BSUID, parent BSUID)
//! per tenant, each pointing to one customer id, and the rule that finds, creates and links.
//!
//! The rule, for one [`CustomerLookup`]: the customer is the owner of the first alias of
//! `find` that has one (parent BSUID, then BSUID, then phone); when none has, a new customer
//! is created. Every alias of `link` without an owner is attached to that customer. An alias
//! owned by another customer stays where it is and is reported as a conflict: two customers are
//! never merged by Tandem on its own. Aliases are never removed or moved, which is what makes
//! a cached `alias → customer` answer true for ever and resolution idempotent under retries.
//!
//! The Redis backend runs the same rule in `redis/resolve.lua`; the contract tests hold both
//! to it.

use std::collections::HashMap;

use tandem_domain::{Alias, CustomerId, CustomerLookup, Resolved};

use crate::error::StoreError;

/// The tenant of a single-business deployment.
pub const DEFAULT_TENANT: &str = "default";

/// The schema version this build writes: 2 added customer aliases.
pub(crate) const SCHEMA_VERSION: u64 = 2;

/// A fresh customer id: `c_` and 32 hex digits.
pub(crate) fn new_customer_id() -> CustomerId {
    CustomerId::from_random(uuid::Uuid::new_v4().as_u128())
}

/// The answers of a resolution and the aliases it needs written (alias, owner).
pub(crate) type Resolution = (Vec<Resolved>, Vec<(Alias, CustomerId)>);

/// Applies the rule of the module docs to `lookups` in order. `owner` reads the stored owner
/// of an alias; aliases written by earlier lookups of the same call are seen by later ones.
/// Returns the answers and the aliases to write.
pub(crate) fn resolve_all(
    lookups: &[CustomerLookup],
    mut owner: impl FnMut(&Alias) -> Result<Option<CustomerId>, StoreError>,
) -> Result<Resolution, StoreError> {
    let mut written: HashMap<Alias, CustomerId> = HashMap::new();
    let mut answers = Vec::with_capacity(lookups.len());
    let mut writes = Vec::new();
    fn read(
        written: &HashMap<Alias, CustomerId>,
        owner: &mut impl FnMut(&Alias) -> Result<Option<CustomerId>, StoreError>,
        alias: &Alias,
    ) -> Result<Option<CustomerId>, StoreError> {
        match written.get(alias) {
            Some(id) => Ok(Some(id.clone())),
            None => owner(alias),
        }
    }
    for lookup in lookups {
        let mut found = None;
        for alias in &lookup.find {
            if let Some(id) = read(&written, &mut owner, alias)? {
                found = Some(id);
                break;
            }
        }
        let created = found.is_none();
        let customer = found.unwrap_or_else(new_customer_id);
        let mut linked = Vec::new();
        let mut conflicts = Vec::new();
        for alias in &lookup.link {
            match read(&written, &mut owner, alias)? {
                None => {
                    written.insert(alias.clone(), customer.clone());
                    writes.push((alias.clone(), customer.clone()));
                    linked.push(alias.clone());
                }
                Some(other) if other != customer => conflicts.push((alias.clone(), other)),
                Some(_) => {}
            }
        }
        answers.push(Resolved {
            customer,
            created,
            linked,
            conflicts,
        });
    }
    Ok((answers, writes))
}

/// The aliases a conversation stored before schema 2 implies: its customer id is the phone
/// (or, for a few, the BSUID) it was created with.
pub(crate) fn legacy_alias(customer: &CustomerId) -> Option<Alias> {
    tandem_domain::Identity::of(customer.as_str())?
        .aliases()
        .into_iter()
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_domain::{AliasKind, Identity, Phone, UserId};

    fn phone(p: &str) -> Alias {
        Alias::phone(&Phone::parse(p).unwrap())
    }

    fn user(u: &str) -> Alias {
        Alias::user(&UserId::parse(u).unwrap())
    }

    #[test]
    fn one_call_sees_its_own_writes() {
        let identity = Identity {
            phone: Some(Phone::parse("155").unwrap()),
            user_id: Some(UserId::parse("US.1").unwrap()),
            ..Identity::default()
        };
        let lookup = CustomerLookup::of(&identity);
        let (answers, writes) = resolve_all(&[lookup.clone(), lookup], |_| Ok(None)).unwrap();
        assert!(answers[0].created);
        assert!(!answers[1].created);
        assert_eq!(answers[0].customer, answers[1].customer);
        assert_eq!(writes.len(), 2);
        assert!(answers[1].linked.is_empty());
    }

    #[test]
    fn a_conflict_is_reported_and_routed_by_the_bsuid() {
        let a = CustomerId::parse("c_a").unwrap();
        let b = CustomerId::parse("c_b").unwrap();
        let owners: HashMap<Alias, CustomerId> =
            [(phone("155"), a.clone()), (user("US.1"), b.clone())].into();
        let lookup = CustomerLookup {
            find: vec![user("US.1"), phone("155")],
            link: vec![user("US.1"), phone("155")],
        };
        let (answers, writes) = resolve_all(&[lookup], |x| Ok(owners.get(x).cloned())).unwrap();
        assert_eq!(answers[0].customer, b);
        assert_eq!(answers[0].conflicts, vec![(phone("155"), a)]);
        assert!(writes.is_empty());
    }

    #[test]
    fn legacy_ids_imply_their_alias() {
        let alias = legacy_alias(&CustomerId::parse("15550002222").unwrap()).unwrap();
        assert_eq!(alias.kind, AliasKind::Phone);
        assert!(legacy_alias(&CustomerId::parse("c_12ab").unwrap()).is_none());
        assert!(new_customer_id().as_str().starts_with("c_"));
    }
}
