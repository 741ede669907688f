//! Both adapters carry the same migrations, with the same versions and names.

#[test]
fn sqlite_and_postgres_migration_lists_match() {
    assert_eq!(
        keel_store_sqlite::migration_names(),
        keel_store_postgres::migration_names()
    );
    assert!(!keel_store_sqlite::migration_names().is_empty());
}
