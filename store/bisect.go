package store

import (
	"errors"

	"github.com/go-sql-driver/mysql"
)

// One bad row must not fail its neighbours. LOAD DATA LOCAL cannot stop the
// client's transfer, so the server turns bad data into warnings (which fail
// the batch: see attempt), and a row longer than max_allowed_packet into an
// error that also ends the session. Either way the batch is rolled back
// whole, and without more the up to MaxBatchRows uploads beside the bad one
// would be refused with it. write splits such a batch in halves and commits
// each on its own, recursively, until the row the database refuses stands
// alone and alone gets RejectedError: about 2·log2(n) extra transactions for
// one bad row in n, paid only when a row is refused.

// dataError is a batch failure the rows caused, not the database's state.
type dataError struct{ reason string }

func (e *dataError) Error() string { return "store: load batch: " + e.reason }

// Server errors a row can cause (the rest mean the database or the
// connection failed, and the same rows may succeed on a retry).
var dataErrnos = map[uint16]bool{
	1048: true, // ER_BAD_NULL_ERROR
	1153: true, // ER_NET_PACKET_TOO_LARGE: a row longer than max_allowed_packet
	1265: true, // WARN_DATA_TRUNCATED
	1292: true, // ER_TRUNCATED_WRONG_VALUE
	1301: true, // ER_WARN_ALLOWED_PACKET_OVERFLOWED
	1366: true, // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD
	1406: true, // ER_DATA_TOO_LONG
}

// asDataError reports whether err is a failure the batch's rows caused.
func asDataError(err error) (*dataError, bool) {
	var de *dataError
	if errors.As(err, &de) {
		return de, true
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) && dataErrnos[me.Number] {
		return &dataError{reason: me.Error()}, true
	}
	return nil, false
}
