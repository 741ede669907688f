//! The readiness port: is the database reachable and fully migrated?

use async_trait::async_trait;

use crate::StoreError;

/// The schema's state compared with the migrations this binary embeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Migrations this binary knows.
    pub expected: usize,
    /// Of those, applied successfully with a matching checksum.
    pub applied: usize,
    /// Versions applied but unknown to this binary, or applied with a different checksum,
    /// or left failed: the database is not one this binary can serve.
    pub mismatched: Vec<i64>,
}

impl SchemaStatus {
    /// True when every embedded migration is applied and nothing is out of place.
    pub fn is_current(&self) -> bool {
        self.applied == self.expected && self.mismatched.is_empty()
    }
}

/// A count a store keeps about its own work, exposed on `/metrics` as a Prometheus counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreCounter {
    /// The metric's name (`keel_` prefix, `_total` suffix).
    pub name: &'static str,
    pub help: &'static str,
    pub value: u64,
}

/// Checks the database behind a store.
#[async_trait]
pub trait StoreHealth: Send + Sync + std::fmt::Debug {
    /// Reaches the database and reports the schema's state; `Unavailable` when unreachable.
    async fn schema_status(&self) -> Result<SchemaStatus, StoreError>;

    /// The store's counters for `/metrics` (statements, transactions, commits); none unless
    /// the adapter counts them.
    fn counters(&self) -> Vec<StoreCounter> {
        Vec::new()
    }
}

/// One migration as the database recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub checksum: Vec<u8>,
    pub success: bool,
}

impl SchemaStatus {
    /// Compares the embedded migrations (`version`, `checksum`) with what the database
    /// recorded. Shared by every adapter so "migrated" means the same thing everywhere.
    pub fn compare<'a>(
        embedded: impl IntoIterator<Item = (i64, &'a [u8])>,
        applied: &[AppliedMigration],
    ) -> Self {
        let embedded: Vec<(i64, &[u8])> = embedded.into_iter().collect();
        let mut ok = 0;
        let mut mismatched = Vec::new();
        for a in applied {
            match embedded.iter().find(|(v, _)| *v == a.version) {
                Some((_, sum)) if a.success && *sum == a.checksum.as_slice() => ok += 1,
                _ => mismatched.push(a.version),
            }
        }
        Self {
            expected: embedded.len(),
            applied: ok,
            mismatched,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(version: i64, checksum: &[u8], success: bool) -> AppliedMigration {
        AppliedMigration {
            version,
            checksum: checksum.to_vec(),
            success,
        }
    }

    #[test]
    fn current_only_when_every_embedded_migration_applied_with_its_checksum() {
        let embedded = [(1, b"a".as_slice()), (2, b"b".as_slice())];
        assert!(
            SchemaStatus::compare(embedded, &[applied(1, b"a", true), applied(2, b"b", true)])
                .is_current()
        );
        let pending = SchemaStatus::compare(embedded, &[applied(1, b"a", true)]);
        assert!(!pending.is_current());
        assert_eq!((pending.applied, pending.expected), (1, 2));
        let edited =
            SchemaStatus::compare(embedded, &[applied(1, b"x", true), applied(2, b"b", true)]);
        assert_eq!(edited.mismatched, vec![1]);
        let failed =
            SchemaStatus::compare(embedded, &[applied(1, b"a", true), applied(2, b"b", false)]);
        assert_eq!(failed.mismatched, vec![2]);
        let newer = SchemaStatus::compare(
            embedded,
            &[
                applied(1, b"a", true),
                applied(2, b"b", true),
                applied(3, b"c", true),
            ],
        );
        assert!(!newer.is_current());
    }
}
