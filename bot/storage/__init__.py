"""The ground floor: the SQLite connection and the migrations. Each store lives with the
package whose rules it keeps (the job store in `bot.jobs.store`, the ledger in `bot.ledger`)."""
