-- identities: every author the store knows, with handle and display name as last resolved.
SELECT did, handle, display_name, pds, active, status, fetched_at, updated_at FROM identities ORDER BY did;
