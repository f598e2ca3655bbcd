"""The control plane: blipflow's operational state, in SQL tables every process shares.

DuckDB keeps what it is best at, the blip history that ingest writes in bulk and analytics scans; it lets
one process at a time open its file, which caps how many dispatch and publish processes can work. The
state those processes read and write all the time lives here instead: what dispatch needs of each blip,
coordination's position and state, the delivery ledger (windows, and every decision with its reason),
the circuits, the outbox (replies and the posts they went out as), the identities dispatch resolved and
the leases by which several processes share the work.

Where it lives is a URL, the same choice Prefect offers: a SQLite file under `data/` by default
(embedded, WAL, shared by the processes of one machine), or PostgreSQL (`postgresql+psycopg://…`) for
installs that outgrow one machine. Its schema is migrated with Alembic, to the newest revision on first
use (`blipflow/control/migrations`, shipped with the package).

One module owns connections (`engine`), one declares the tables (`tables`), and each concern has its
repository (`blips`, `coordination`, `ledger`, `outbox`, `circuits`, `identities`, `leases`) that
returns typed rows. Ingest feeds `blips` from what it stored; dispatch and publish work from the rest.
`scans` hands analytics the windows written since a change mark (`changes`), for its copy of them.
"""
