-- The last change of a kind (the DNS zone serial follows the last machine change) without a scan.
CREATE INDEX changes_kind_seq ON changes (kind, seq);
