package signaling

import (
	"sync"
	"time"
)

// workers runs the short tasks of connections (reading after the poller's wake, flushing a
// mailbox) on goroutines that wait a while for the next task before they end: on a busy node a
// message does not start a goroutine, and grow its stack, every time; on an idle one no
// goroutine is left.
type workers struct {
	tasks chan func()
	stop  chan struct{}
	wg    sync.WaitGroup

	mu      sync.Mutex
	stopped bool // guarded by mu: close has begun, so no worker starts
}

// workerIdle is how long a worker waits for a task before it ends.
const workerIdle = 2 * time.Second

func newWorkers() *workers {
	return &workers{tasks: make(chan func()), stop: make(chan struct{})}
}

// run runs f on a waiting worker, or on a new one (after close, on a goroutine of its own).
func (w *workers) run(f func()) {
	select {
	case w.tasks <- f:
		return
	default:
	}
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		go f()
		return
	}
	w.wg.Add(1)
	w.mu.Unlock()
	go w.work(f)
}

func (w *workers) work(f func()) {
	defer w.wg.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		f()
		idle.Reset(workerIdle)
		select {
		case f = <-w.tasks:
		case <-idle.C:
			return
		case <-w.stop:
			return
		}
	}
}

// close ends the waiting workers, and waits for the busy ones.
func (w *workers) close() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	close(w.stop)
	w.wg.Wait()
}
