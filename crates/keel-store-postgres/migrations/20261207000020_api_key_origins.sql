-- Issue 23: the exact browser origins a publishable key allows (CORS), space-separated (an
-- origin holds no space); empty: no browser origin is granted.
ALTER TABLE api_keys ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '';
