//! The security review of issue 19, one module per finding: each test performs the attack
//! over real HTTP (on SQLite and PostgreSQL where the finding concerns both) and asserts that
//! the control holds. Every test here failed on the code before its fix.

mod client_addr;
mod deliveries;
mod files;
mod hashing;
mod hoarding;
mod listener;
mod notifications;
mod resets;
mod second_factor;
