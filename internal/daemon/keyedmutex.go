package daemon

import (
	"context"
	"sync"
	"time"
)

// keyedMutex is a mutex per key, made on first use and forgotten when
// nobody holds or waits for it, so keys that come and go (VM names, image
// names) leave nothing behind. A wait can end with its context, and a
// holder says what it holds the key for, so a waiter that gives up can
// say what it waited behind. The zero value is ready to use.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	sem  chan struct{} // holds one token while the key is locked
	refs int           // holders and waiters; guarded by keyedMutex.mu
	// what the holder does and since when; guarded by keyedMutex.mu
	what  string
	since time.Time
}

// lock locks key and returns its unlock.
func (k *keyedMutex) lock(key string) func() {
	unlock, _ := k.lockFor(context.Background(), key, "")
	return unlock
}

// lockFor locks key for what (a few words: "vm pause") and returns its
// unlock, or, when ctx is done first, an error saying what holds it.
func (k *keyedMutex) lockFor(ctx context.Context, key, what string) (func(), error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{sem: make(chan struct{}, 1)}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	select {
	case e.sem <- struct{}{}:
	case <-ctx.Done():
		k.mu.Lock()
		err := &busyError{what: e.what, since: e.since, err: ctx.Err()}
		k.release(key, e)
		k.mu.Unlock()
		return nil, err
	}
	k.mu.Lock()
	e.what, e.since = what, time.Now()
	k.mu.Unlock()
	return func() {
		k.mu.Lock()
		e.what = ""
		<-e.sem
		k.release(key, e)
		k.mu.Unlock()
	}, nil
}

// release drops one reference to key's entry; the caller holds k.mu.
func (k *keyedMutex) release(key string, e *keyedEntry) {
	if e.refs--; e.refs == 0 {
		delete(k.m, key)
	}
}

// len is how many keys are held or waited for.
func (k *keyedMutex) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

// busyError is a lock wait that ended with its context.
type busyError struct {
	what  string // what the holder does; "" when it did not say
	since time.Time
	err   error
}

func (e *busyError) Error() string {
	if e.what == "" {
		return "waiting for another command on it to finish: " + e.err.Error()
	}
	return "waiting behind " + e.what + ", running for " + time.Since(e.since).Round(time.Second).String() + ": " + e.err.Error()
}

func (e *busyError) Unwrap() error { return e.err }
