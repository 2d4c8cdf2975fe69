#!/usr/bin/env python3
"""Writes a SQLite subscriber table in Kamailio's layout (with its `version`
row, which auth_db checks) holding user0..userN-1@DOMAIN, all with one
password: HA1 (MD5) and, for SwiftSER, HA1 with SHA-256. Used by
scripts/bench-compare for the REGISTER-with-digest row; both servers get a
copy of the same file.

    subscribers.py FILE --users 1000 --domain localhost --password PW
"""
import argparse
import hashlib
import sqlite3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--domain", default="localhost")
    ap.add_argument("--password", required=True)
    a = ap.parse_args()
    db = sqlite3.connect(a.file)
    db.executescript("""
        CREATE TABLE version (table_name VARCHAR(32) NOT NULL, table_version INTEGER DEFAULT 0 NOT NULL,
                              CONSTRAINT version_table_name_idx UNIQUE (table_name));
        INSERT INTO version (table_name, table_version) VALUES ('subscriber', 7);
        CREATE TABLE subscriber (id INTEGER PRIMARY KEY NOT NULL, username VARCHAR(64) DEFAULT '' NOT NULL,
                                 domain VARCHAR(64) DEFAULT '' NOT NULL, password VARCHAR(64) DEFAULT '' NOT NULL,
                                 ha1 VARCHAR(128) DEFAULT '' NOT NULL, ha1b VARCHAR(128) DEFAULT '' NOT NULL,
                                 ha1_sha256 TEXT NOT NULL DEFAULT '',
                                 CONSTRAINT subscriber_account_idx UNIQUE (username, domain));
        CREATE INDEX subscriber_username_idx ON subscriber (username);
    """)
    rows = []
    for i in range(a.users):
        user = f"user{i}"
        ha1 = hashlib.md5(f"{user}:{a.domain}:{a.password}".encode()).hexdigest()
        ha1b = hashlib.md5(f"{user}@{a.domain}:{a.domain}:{a.password}".encode()).hexdigest()
        ha1s = hashlib.sha256(f"{user}:{a.domain}:{a.password}".encode()).hexdigest()
        rows.append((user, a.domain, "", ha1, ha1b, ha1s))
    db.executemany("INSERT INTO subscriber (username, domain, password, ha1, ha1b, ha1_sha256) VALUES (?,?,?,?,?,?)", rows)
    db.commit()
    db.close()


if __name__ == "__main__":
    main()
