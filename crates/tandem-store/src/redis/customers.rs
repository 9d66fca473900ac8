//! Customer aliases on Redis: resolution through `resolve.lua` (one round trip, atomic) and
//! the migration that gives conversations stored before schema 2 their phone alias.

use redis::AsyncCommands;
use tandem_domain::{Alias, ConversationId, CustomerId, CustomerLookup, Resolved};

use super::RedisStore;
use crate::customers::{DEFAULT_TENANT, SCHEMA_VERSION, legacy_alias, new_customer_id};
use crate::error::StoreError;

fn alias_arg(alias: &Alias) -> String {
    format!("{}:{}", alias.kind.as_str(), alias.value)
}

impl RedisStore {
    pub(super) async fn resolve(
        &self,
        tenant: &str,
        lookups: &[CustomerLookup],
    ) -> Result<Vec<Resolved>, StoreError> {
        if lookups.is_empty() {
            return Ok(Vec::new());
        }
        let mut script = self.scripts.resolve.prepare_invoke();
        script
            .arg(self.keys.alias_prefix(tenant))
            .arg(self.keys.customer_aliases_prefix(tenant));
        for lookup in lookups {
            script.arg(lookup.find.len());
            for alias in &lookup.find {
                script.arg(alias_arg(alias));
            }
            script.arg(lookup.link.len());
            for alias in &lookup.link {
                script.arg(alias_arg(alias));
            }
            script.arg(new_customer_id().as_str());
        }
        let mut con = self.con.clone();
        let raw: Vec<redis::Value> = script.invoke_async(&mut con).await?;
        let mut answer = raw.into_iter();
        let mut next = || -> Result<String, StoreError> {
            match answer.next() {
                Some(value) => redis::from_redis_value::<String>(value)
                    .map_err(|e| StoreError::Protocol(format!("resolve answered {e}"))),
                None => Err(StoreError::Protocol("resolve answered too little".into())),
            }
        };
        let number = |s: String| -> Result<usize, StoreError> {
            s.parse()
                .map_err(|_| StoreError::Protocol(format!("resolve answered {s:?}")))
        };
        let customer_id = |s: String| -> Result<CustomerId, StoreError> {
            CustomerId::parse(s).map_err(|e| StoreError::corrupt("alias", e))
        };
        let mut out = Vec::with_capacity(lookups.len());
        for lookup in lookups {
            let link_at = |index: usize| -> Result<Alias, StoreError> {
                index
                    .checked_sub(1)
                    .and_then(|i| lookup.link.get(i))
                    .cloned()
                    .ok_or_else(|| StoreError::Protocol("resolve named no such alias".into()))
            };
            let customer = customer_id(next()?)?;
            let created = next()? == "1";
            let mut linked = Vec::new();
            for _ in 0..number(next()?)? {
                linked.push(link_at(number(next()?)?)?);
            }
            let mut conflicts = Vec::new();
            for _ in 0..number(next()?)? {
                let alias = link_at(number(next()?)?)?;
                conflicts.push((alias, customer_id(next()?)?));
            }
            out.push(Resolved {
                customer,
                created,
                linked,
                conflicts,
            });
        }
        Ok(out)
    }

    pub(super) async fn owner(
        &self,
        tenant: &str,
        alias: &Alias,
    ) -> Result<Option<CustomerId>, StoreError> {
        let mut con = self.con.clone();
        let key = format!("{}{}", self.keys.alias_prefix(tenant), alias_arg(alias));
        let raw: Option<String> = con.get(key).await?;
        raw.map(|r| CustomerId::parse(r).map_err(|e| StoreError::corrupt("alias", e)))
            .transpose()
    }

    /// Brings a keyspace written by an earlier version up to [`SCHEMA_VERSION`]. Version 2:
    /// every conversation (recorded, or waiting to be applied) whose customer id is the phone
    /// it was created with gets that phone as an alias (`SET NX`, so replicas starting
    /// together or a migration cut short and run again do no harm). A keyspace from a newer
    /// version is refused.
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let schema = self.keys.schema();
        let version: Option<u64> = con.get(&schema).await?;
        let version = match version {
            Some(v) => v,
            // A keyspace with no conversations at all is new: nothing to migrate.
            None => {
                let known: u64 = con.zcard(self.keys.all_conversations()).await?;
                let waiting: u64 = con.zcard(self.keys.ready()).await?;
                if known + waiting == 0 {
                    let _: () = con.set_nx(&schema, SCHEMA_VERSION).await?;
                    return Ok(());
                }
                1
            }
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::Config(format!(
                "the Redis keyspace has schema version {version}; this Tandem reads up to {SCHEMA_VERSION}: use a newer release"
            )));
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        let mut added = 0_u64;
        for index in [self.keys.all_conversations(), self.keys.ready()] {
            let ids: Vec<String> = con.zrange(&index, 0, -1).await?;
            for raw in ids {
                let id = ConversationId::parse(&raw)
                    .map_err(|e| StoreError::corrupt("conversation index", e))?;
                let Some(alias) = legacy_alias(id.customer()) else {
                    continue;
                };
                let key = format!(
                    "{}{}",
                    self.keys.alias_prefix(DEFAULT_TENANT),
                    alias_arg(&alias)
                );
                let set: bool = con.set_nx(key, id.customer().as_str()).await?;
                if set {
                    let index = self
                        .keys
                        .customer_aliases(DEFAULT_TENANT, id.customer().as_str());
                    let _: u64 = con.sadd(index, alias_arg(&alias)).await?;
                }
                added += u64::from(set);
            }
        }
        let _: () = con.set(&schema, SCHEMA_VERSION).await?;
        tracing::info!(
            from = version,
            to = SCHEMA_VERSION,
            aliases = added,
            "redis keyspace migrated"
        );
        Ok(())
    }

    /// Makes sure every alias is also in its customer's alias set (what an erasure reads):
    /// a keyspace written before the sets existed is indexed once, with one incremental scan
    /// of its aliases, and marked. Idempotent (`SADD`), so replicas starting together do no
    /// harm.
    pub(super) async fn ensure_alias_index(&self) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let marker = self.keys.alias_index();
        if con.exists(&marker).await? {
            return Ok(());
        }
        let root = self.keys.aliases_root();
        let all = format!("{root}*");
        let mut cursor = 0_u64;
        let mut indexed = 0_u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&all)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut con)
                .await?;
            if !keys.is_empty() {
                let owners: Vec<Option<String>> = con.mget(&keys).await?;
                let mut pipe = redis::pipe();
                for (key, owner) in keys.iter().zip(owners) {
                    // `{prefix}:alias:{tenant}:{kind}:{value}`
                    let Some((tenant, alias)) = key
                        .strip_prefix(&root)
                        .and_then(|rest| rest.split_once(':'))
                    else {
                        continue;
                    };
                    if let Some(owner) = owner {
                        let set = self.keys.customer_aliases(tenant, &owner);
                        pipe.sadd(set, alias).ignore();
                        indexed += 1;
                    }
                }
                let _: () = pipe.query_async(&mut con).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let _: () = con.set(&marker, 1).await?;
        if indexed > 0 {
            tracing::info!(aliases = indexed, "redis alias index built");
        }
        Ok(())
    }
}
