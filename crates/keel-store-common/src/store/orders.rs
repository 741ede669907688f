//! (being moved here from both adapters; ADR 0032)
