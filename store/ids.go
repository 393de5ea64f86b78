package store

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
)

// Ids chosen by upsink. Rows get ids from blocks, not from auto-increment
// order: a writer takes a block of ids for a table by committing, in a
// transaction of its own,
//
//	UPDATE upsink_ids SET next_id = LAST_INSERT_ID(GREATEST(next_id, MAX(id)+1) + size) WHERE name = 'uploads'
//
// and gives its rows ids from it in the LOAD stream. A block is never handed
// out twice once its UPDATE committed, on any node of a Galera cluster (two
// instances racing for it collide at certification and one retries), across
// writers, instances and restarts; so ids are unique without a single
// writer, known before COMMIT (no read-back), and a batch's rows of one
// table have consecutive ids. Ids are not consecutive across batches:
// unused ids of a block are lost when the writer stops, and a batch that
// fails leaves a gap. GREATEST with MAX(id)+1 keeps the ids above rows
// written before the counter existed (or by anyone else). Batch ids come
// from the same counter table (name "/batch"), so they are unique across
// instances too. The auto-increment settings of the server are not touched.

const createIDs = `CREATE TABLE IF NOT EXISTS upsink_ids (
  name VARCHAR(80) CHARACTER SET ascii NOT NULL PRIMARY KEY,
  next_id BIGINT UNSIGNED NOT NULL)`

// idBlockSize is how many ids a writer takes at a time; a larger request
// takes exactly what it needs.
var idBlockSize uint64 = 1 << 16

// idBlock is the part of a block a writer has not given out: next..end-1.
type idBlock struct {
	next, end uint64
}

// seedIDs makes sure every counter the writer uses has its row.
func (w *writer) seedIDs(ctx context.Context, c *sql.Conn) error {
	b := append(w.sqlBuf[:0], "INSERT IGNORE INTO upsink_ids (name, next_id) VALUES ('/batch',1),('uploads',1)"...)
	for _, t := range w.cfg.Tables {
		b = append(b, ",('"...)
		b = append(b, t.Name...) // a declared name: [A-Za-z0-9_], checked by schema
		b = append(b, "',1)"...)
	}
	w.sqlBuf = b
	if _, err := c.ExecContext(ctx, string(b)); err != nil {
		return fmt.Errorf("store: id counters: %w", err)
	}
	return nil
}

// takeIDs returns the first of n consecutive ids of table (its counter row
// name and its id column), from blk or from a new block. It runs outside
// any transaction (autocommit), before the batch's START TRANSACTION.
func (w *writer) takeIDs(ctx context.Context, blk *idBlock, name, table, column string, n uint64) (uint64, error) {
	if blk.end-blk.next >= n {
		first := blk.next
		blk.next += n
		return first, nil
	}
	size := max(idBlockSize, n)
	b := append(w.sqlBuf[:0], "UPDATE upsink_ids SET next_id = LAST_INSERT_ID(GREATEST(next_id, (SELECT COALESCE(MAX(`"...)
	b = append(b, column...)
	b = append(b, "`), 0) + 1 FROM `"...)
	b = append(b, table...)
	b = append(b, "`)) + "...)
	b = strconv.AppendUint(b, size, 10)
	b = append(b, ") WHERE name = '"...)
	b = append(b, name...)
	b = append(b, '\'')
	w.sqlBuf = b
	w.busy()
	res, err := w.conn.ExecContext(ctx, string(b))
	if err != nil {
		return 0, fmt.Errorf("store: take ids of %s: %w", name, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return 0, fmt.Errorf("store: take ids of %s: %d counter rows changed (%v)", name, n, err)
	}
	last, err := res.LastInsertId()
	if err != nil || last <= 0 || uint64(last) < size {
		return 0, fmt.Errorf("store: take ids of %s: block end %d (%v)", name, last, err)
	}
	blk.next, blk.end = uint64(last)-size, uint64(last)
	first := blk.next
	blk.next += n
	return first, nil
}

// dropBlocks forgets the writer's blocks: the next batch takes new ones.
func (w *writer) dropBlocks() {
	w.uploadIDs, w.batchIDs = idBlock{}, idBlock{}
	for _, tl := range w.tables {
		tl.ids = idBlock{}
	}
}
