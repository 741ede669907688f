//! Cursor pagination.
//!
//! Lists are keyset-paginated on the (time-ordered) id: a page holds the next `limit` rows
//! after the cursor's id. New rows always sort after existing ones, so paging through a list
//! while inserts happen yields no duplicates and no gaps. Cursors are opaque to clients
//! (base64url of a versioned binary form) so the key can change without breaking them.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use uuid::Uuid;

/// How many items a page holds: an exact count in `1..=MAX`, `DEFAULT` when not asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(u32);

/// Why a `limit` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit must be between 1 and {max}", max = Limit::MAX)]
pub struct LimitError;

impl Limit {
    /// The page size when the client does not ask for one.
    pub const DEFAULT: Self = Self(20);
    /// The largest page a client may ask for.
    pub const MAX: u32 = 100;

    /// Parses a requested page size.
    pub fn new(n: u32) -> Result<Self, LimitError> {
        if (1..=Self::MAX).contains(&n) {
            Ok(Self(n))
        } else {
            Err(LimitError)
        }
    }

    /// The size as a count.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The number of rows an adapter fetches: one more than the page, to learn whether
    /// another page follows without a second query.
    pub fn fetch_count(self) -> i64 {
        i64::from(self.0) + 1
    }
}

impl Default for Limit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// An opaque position in a list: "after this id".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    after: Uuid,
}

/// Why a cursor string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not one this API issued")]
pub struct CursorError;

/// Version byte of the encoded form, so the format can evolve.
const CURSOR_V1: u8 = 1;

impl Cursor {
    /// A cursor pointing after the row with this storage id.
    pub const fn after(id: Uuid) -> Self {
        Self { after: id }
    }

    /// The storage id to continue after.
    pub const fn after_id(self) -> Uuid {
        self.after
    }

    /// The opaque wire form.
    pub fn encode(self) -> String {
        let mut bytes = Vec::with_capacity(17);
        bytes.push(CURSOR_V1);
        bytes.extend_from_slice(self.after.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Parses the wire form; anything this API did not issue is an error.
    pub fn decode(s: &str) -> Result<Self, CursorError> {
        // 17 bytes encode to 23 characters; refuse anything longer before decoding.
        if s.len() != 23 {
            return Err(CursorError);
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| CursorError)?;
        match bytes.split_first() {
            Some((&CURSOR_V1, rest)) => {
                let id = Uuid::from_slice(rest).map_err(|_| CursorError)?;
                Ok(Self::after(id))
            }
            _ => Err(CursorError),
        }
    }
}

/// A request for one page of a list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: Limit,
    pub after: Option<Cursor>,
}

impl PageRequest {
    /// The first page of `limit` items.
    pub fn first(limit: Limit) -> Self {
        Self { limit, after: None }
    }
}

/// One page of a list and where the next one starts (`None` on the last page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<Cursor>,
}

impl<T> Page<T> {
    /// Builds a page from rows fetched with [`Limit::fetch_count`]: when more rows than the
    /// limit came back, another page exists and starts after the last row kept.
    pub fn from_overfetch(mut rows: Vec<T>, limit: Limit, key: impl Fn(&T) -> Uuid) -> Self {
        let keep = usize::try_from(limit.get()).expect("a limit of at most 100 fits in usize");
        if rows.len() > keep {
            rows.truncate(keep);
            let next_cursor = rows.last().map(|last| Cursor::after(key(last)));
            Self {
                items: rows,
                next_cursor,
            }
        } else {
            Self {
                items: rows,
                next_cursor: None,
            }
        }
    }

    /// Maps the items, keeping the cursor.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn limit_bounds_are_exact() {
        assert_eq!(Limit::new(0), Err(LimitError));
        assert_eq!(Limit::new(1).map(Limit::get), Ok(1));
        assert_eq!(Limit::new(100).map(Limit::get), Ok(100));
        assert_eq!(Limit::new(101), Err(LimitError));
        assert_eq!(Limit::default().get(), 20);
    }

    #[test]
    fn garbage_cursors_are_refused() {
        for bad in [
            "",
            "abc",
            "AAAAAAAAAAAAAAAAAAAAAAA",
            "!!!!!!!!!!!!!!!!!!!!!!!",
            &"A".repeat(10_000),
        ] {
            assert_eq!(Cursor::decode(bad), Err(CursorError), "{bad:.30}");
        }
    }

    #[test]
    fn overfetch_sets_the_cursor_only_when_more_rows_exist() {
        let ids: Vec<Uuid> = (0..4u128).map(Uuid::from_u128).collect();
        let limit = Limit::new(3).expect("3 is a valid limit");
        let page = Page::from_overfetch(ids.clone(), limit, |u| *u);
        assert_eq!(page.items, ids[..3]);
        assert_eq!(page.next_cursor, Some(Cursor::after(ids[2])));
        let last = Page::from_overfetch(ids[..3].to_vec(), limit, |u| *u);
        assert_eq!(last.next_cursor, None);
    }

    proptest! {
        #[test]
        fn cursors_round_trip(n in any::<u128>()) {
            let c = Cursor::after(Uuid::from_u128(n));
            prop_assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        }
    }
}
