//! Customer aliases in the embedded store: resolution (see [`crate::customers`]) and the
//! migration that gives conversations stored before schema 2 their phone alias.

use redb::{ReadableTable, Table, WriteTransaction};
use tandem_domain::{Alias, ConversationId, CustomerId, CustomerLookup, Resolved};

use super::tables::{ALIASES, CONVERSATIONS, INBOX, META, SCHEMA, redb_err};
use crate::customers::{DEFAULT_TENANT, SCHEMA_VERSION, legacy_alias, resolve_all};
use crate::error::StoreError;

type AliasTable<'t> = Table<'t, (&'static str, &'static str, &'static str), &'static str>;

/// Reads the owner of `alias` in `tenant` from any table handle.
pub(super) fn owner(
    table: &impl ReadableTable<(&'static str, &'static str, &'static str), &'static str>,
    tenant: &str,
    alias: &Alias,
) -> Result<Option<CustomerId>, StoreError> {
    let found = table
        .get((tenant, alias.kind.as_str(), alias.value.as_str()))
        .map_err(redb_err("reading an alias"))?;
    found
        .map(|v| CustomerId::parse(v.value()).map_err(|e| StoreError::corrupt("alias", e)))
        .transpose()
}

/// Resolves `lookups` inside a write transaction and writes the new aliases.
pub(super) fn resolve_in(
    table: &mut AliasTable<'_>,
    tenant: &str,
    lookups: &[CustomerLookup],
) -> Result<Vec<Resolved>, StoreError> {
    let (answers, writes) = resolve_all(lookups, |alias| owner(&*table, tenant, alias))?;
    for (alias, customer) in writes {
        table
            .insert(
                (tenant, alias.kind.as_str(), alias.value.as_str()),
                customer.as_str(),
            )
            .map_err(redb_err("writing an alias"))?;
    }
    Ok(answers)
}

/// Brings a file written by an earlier version up to [`SCHEMA_VERSION`], inside the opening
/// transaction. Version 2: every conversation (stored, or only waiting in the inbox) whose
/// customer id is the phone it was created with gets that phone as an alias, so the
/// customer's next message, with or without a BSUID, finds the same conversation.
/// Idempotent; a file from a newer version is refused.
pub(super) fn migrate(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(redb_err("opening meta"))?;
    let version = meta
        .get(SCHEMA)
        .map_err(redb_err("reading the schema version"))?
        .map_or(1, |v| v.value());
    if version > SCHEMA_VERSION {
        return Err(StoreError::Config(format!(
            "the store file has schema version {version}; this Tandem reads up to {SCHEMA_VERSION}: use a newer release"
        )));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let mut ids: Vec<String> = Vec::new();
    {
        let conversations = txn
            .open_table(CONVERSATIONS)
            .map_err(redb_err("opening conversations"))?;
        for row in conversations
            .iter()
            .map_err(redb_err("reading conversations"))?
        {
            let (key, _) = row.map_err(redb_err("reading conversations"))?;
            ids.push(key.value().to_owned());
        }
        let inbox = txn
            .open_table(INBOX)
            .map_err(redb_err("opening the inbox"))?;
        for row in inbox.iter().map_err(redb_err("reading the inbox"))? {
            let (key, _) = row.map_err(redb_err("reading the inbox"))?;
            ids.push(key.value().0.to_owned());
        }
    }
    let mut aliases = txn
        .open_table(ALIASES)
        .map_err(redb_err("opening aliases"))?;
    let mut added = 0_usize;
    for raw in ids {
        let id =
            ConversationId::parse(&raw).map_err(|e| StoreError::corrupt("conversation id", e))?;
        let Some(alias) = legacy_alias(id.customer()) else {
            continue;
        };
        let key = (DEFAULT_TENANT, alias.kind.as_str(), alias.value.as_str());
        if aliases
            .get(key)
            .map_err(redb_err("reading an alias"))?
            .is_none()
        {
            aliases
                .insert(key, id.customer().as_str())
                .map_err(redb_err("writing an alias"))?;
            added += 1;
        }
    }
    meta.insert(SCHEMA, SCHEMA_VERSION)
        .map_err(redb_err("writing the schema version"))?;
    tracing::info!(
        from = version,
        to = SCHEMA_VERSION,
        aliases = added,
        "embedded store migrated"
    );
    Ok(())
}
