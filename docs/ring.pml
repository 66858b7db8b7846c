/*
 * Promela model of the wake-up handshakes of the SPSC ring (engine/ring/ring.ts, docs/RING.md).
 *
 * Checked by test/ring.model.test.ts:   spin -a [-DBROKEN_...] ring.pml; cc -o pan pan.c; ./pan
 *
 * What is modelled, statement by statement as ring.ts does it (every shared load or store is
 * one atomic step; everything else is thread-local):
 *
 *   consumer  drain: load WRITE; hand out and release what is there; syncRead (store READ;
 *             if load PRODUCER_WAITING == 1: notify(READ)).
 *             waitForData, with `seen` = the WRITE value it found empty:
 *               store SLEEPING = 1; if load WRITE != seen: store SLEEPING = 0, return;
 *               waitAsync(WRITE, seen); store SLEEPING = 0.
 *   producer  reserve: fits against the cached READ, else load READ and retry, else full.
 *             commit (local), publish when it chooses to batch no further:
 *               store WRITE = w; if load SLEEPING == 1: notify(WRITE).
 *             waitForSpace: publish; loop { load READ (canFit); if it fits: done;
 *               store PRODUCER_WAITING = 1; if load READ == seen: waitAsync(READ, seen);
 *               store PRODUCER_WAITING = 0 }.
 *
 * waitAsync(word, v) is a futex: comparing the word with v and blocking happen in one atomic
 * step (the agent's waiter list is locked), and returns at once when they differ. notify(word)
 * wakes whoever is blocked on that word at that moment and nobody later. Timeouts are not
 * modelled: every wait in the model is an infinite one, so a lost wake-up is a deadlock.
 *
 * Counters count records, not bytes (capacity CAP records): the byte layout is irrelevant to the
 * handshake and is tested elsewhere. N records are sent; the producer batches nondeterministically.
 *
 * Properties (a failure of either is reported by pan as an error):
 *   1. no invalid end state: both processes terminate, i.e. neither ever blocks forever, and the
 *      consumer receives exactly N records in order (assert at its end);
 *   2. assertion "no stale sleeper": when a publish (or a syncRead) completes, the other side is
 *      not blocked on a value older than the one just stored. This is stronger than 1: it also
 *      catches a wake-up that is lost but later rescued by an unrelated, later publish.
 *
 * Deliberately broken variants (each must make pan report errors, see the test):
 *   -DBROKEN_PRODUCER_CLEARS   the producer clears SLEEPING itself after notifying (the trap in
 *                              MEASURED.md): it can erase the consumer's next announcement.
 *   -DBROKEN_DOORBELL          the consumer blocks unconditionally on a doorbell instead of
 *                              waiting on WRITE with the value it saw: a publish between its
 *                              re-check and its wait is lost.
 *   -DBROKEN_CONSUMER_CLEARS   the symmetric error on the other handshake: syncRead clears
 *                              PRODUCER_WAITING after notifying.
 *   -DNO_STALE_ASSERT          drops property 2, leaving only the deadlock check: the broken
 *                              variants must still fail, as plain deadlocks (invalid end states).
 *
 * A variant that must still PASS:
 *   -DNO_RECHECK               the consumer skips the explicit re-check of WRITE after announcing.
 *                              Still correct, because waitAsync(WRITE, seen) repeats that
 *                              comparison atomically with blocking; the explicit re-check only
 *                              saves a waitAsync call (~0.8 us) when a publish raced the park.
 *
 * -DLINK models the shard's inbound ring as the engine runs it, both ends replaced:
 *   producer  the main thread (engine/server/link.ts, ShardLink): a client frame is committed and
 *             made visible with publishDeferred (store WRITE = w; return load SLEEPING == 1); a
 *             true answer sets the link's wakeOwed flag, and the event-loop turn's end
 *             (setImmediate settleWake) clears the flag and calls notify (if load SLEEPING == 1:
 *             notify(WRITE)). Frames of one turn share one settle; a turn may end after any
 *             frame. Server publishes and control records are written with publish() instead
 *             (nondeterministically mixed in), and a control record that finds the ring full
 *             waits in waitForSpace as above; its waitAsync is an await, so the turn ends (the
 *             owed wake is settled) while it is pending.
 *   consumer  the shard (workers/shard.ts): drain up to BATCH records, each next() loading WRITE
 *             only when it has handed out everything it last saw (writeCache); syncRead once if
 *             it took any; hasNext (spin), hasNext again, then the blocking park
 *             waitForDataSync: seen = writeCache; store SLEEPING = 1; if load WRITE != seen:
 *             store SLEEPING = 0, go on; Atomics.wait(WRITE, seen); store SLEEPING = 0.
 *             Atomics.wait is the same futex as waitAsync (compare and block in one step).
 *   In LINK mode property 2 reads: at the end of every turn, and after every publish(), the
 *   shard is not blocked while WRITE is ahead of what it has handed out (the ghost cpeek).
 *   Variants of LINK (each must make pan report errors, see the test):
 *   -DBROKEN_DEFERRED_FIRST_ONLY  the link asks publishDeferred's answer only at a turn's first
 *                              frame and forgets a wake owed by a later frame of the same turn
 *                              (the shard parked in between).
 *   -DBROKEN_DEFERRED_LOAD_FIRST  publishDeferred loads SLEEPING before it stores WRITE.
 *   -DBROKEN_PARK_RELOAD       the blocking park waits on a freshly loaded WRITE instead of the
 *                              value it found empty.
 *   and a LINK variant that must still PASS:
 *   -DPARK_LATE_ANNOUNCE       the blocking park re-checks WRITE first and announces after: the
 *                              futex's own comparison with `seen` still catches a publish that
 *                              raced the announcement, so this order is safe as long as the wait
 *                              compares against the value found empty (BROKEN_PARK_RELOAD is the
 *                              order's real hazard).
 *
 * N and CAP may be overridden (-DN=6 -DCAP=3); the test checks a few sizes.
 */

#ifndef N
#define N 4
#endif
#ifndef CAP
#define CAP 2
#endif

byte WRITE = 0;        /* published write counter (records) */
byte READ = 0;         /* synced read counter (records)     */
bit  SLEEPING = 0;
bit  PRODUCER_WAITING = 0;

/* futex state: who is blocked on which word, and with which expected value */
bit  cblocked = 0;     /* consumer blocked in waitAsync(WRITE, cseen) */
bit  pblocked = 0;     /* producer blocked in waitAsync(READ, pseen)  */
byte cseen = 0;
byte pseen = 0;
#ifdef LINK
byte cpeek = 0;        /* ghost copy of the shard's next-record index (records handed out) */
#endif

/* Reachability probes: -DPROBE_CONSUMER_PARKS / -DPROBE_PRODUCER_PARKS turn "this side really
   blocks in some run" into an assertion failure, so the test can show the model is not vacuous. */
#ifdef PROBE_CONSUMER_PARKS
#define PROBE_CONSUMER_PARKS_ON 1
#else
#define PROBE_CONSUMER_PARKS_ON 0
#endif
#ifdef PROBE_PRODUCER_PARKS
#define PROBE_PRODUCER_PARKS_ON 1
#else
#define PROBE_PRODUCER_PARKS_ON 0
#endif
#define PROBE(which)  assert(!which##_ON)

#ifdef NO_STALE_ASSERT
#define STALE_CHECK(e)  skip
#else
#define STALE_CHECK(e)  assert(e)
#endif

/* The consumer sleeps on something older than what is published. */
#ifdef LINK
#define CONSUMER_STALE  (cblocked && cpeek != WRITE)
#else
#define CONSUMER_STALE  (cblocked && cseen != WRITE)
#endif

/* notify(word): wakes the waiter blocked on it now, if any */
#define NOTIFY_WRITE   cblocked = 0
#define NOTIFY_READ    pblocked = 0

/* store WRITE; if load SLEEPING == 1: notify(WRITE). Then check nobody sleeps on a stale value. */
inline publish() {
  if
  :: published != w ->
     published = w;
     WRITE = w;
     if
     :: SLEEPING == 1 ->
        NOTIFY_WRITE;
#ifdef BROKEN_PRODUCER_CLEARS
        SLEEPING = 0;
#endif
     :: else -> skip
     fi;
     STALE_CHECK(!CONSUMER_STALE)
  :: else -> skip
  fi
}

#ifndef LINK
active proctype producer() {
  byte w = 0;          /* committed, maybe not yet published */
  byte published = 0;
  byte rcache = 0;     /* readCache */
  byte rseen;

  do
  :: w == N -> break
  :: else ->
     /* reserve */
     if
     :: w - rcache < CAP -> skip
     :: else ->
        rcache = READ;
        if
        :: w - rcache < CAP -> skip
        :: else ->
           /* full: waitForSpace */
           publish();
           do
           :: rcache = READ;                         /* canFit */
              if
              :: w - rcache < CAP -> break
              :: else ->
                 rseen = rcache;
                 PRODUCER_WAITING = 1;
                 if
                 :: READ == rseen ->
                    atomic {                         /* waitAsync(READ, rseen) */
                      if
                      :: READ == rseen -> pseen = rseen; pblocked = 1; PROBE(PROBE_PRODUCER_PARKS)
                      :: else -> skip
                      fi
                    };
                    (pblocked == 0)
                 :: else -> skip
                 fi;
                 PRODUCER_WAITING = 0
              fi
           od
        fi
     fi;
     w++;                                            /* commit */
     if                                              /* batch: publish now or later */
     :: publish()
     :: skip
     fi
  od;
  publish()
}

active proctype consumer() {
  byte r = 0;          /* records handed out and released */
  byte seen;

  do
  :: r == N -> break
  :: else ->
     seen = WRITE;                                   /* next(): load WRITE */
     if
     :: r != seen ->
        /* drain: one or more records (up to `max`), then syncRead once */
        r++;
        do
        :: r != seen -> r++
        :: break
        od;
        READ = r;                                    /* syncRead */
        if
        :: PRODUCER_WAITING == 1 ->
           NOTIFY_READ;
#ifdef BROKEN_CONSUMER_CLEARS
           PRODUCER_WAITING = 0;
#endif
        :: else -> skip
        fi;
        STALE_CHECK(!(pblocked && pseen != READ))
     :: else ->
        /* waitForData */
        SLEEPING = 1;
        if
#ifndef NO_RECHECK
        :: WRITE != seen -> skip                     /* re-check after announcing */
        :: else ->
#else
        :: true ->
#endif
#ifdef BROKEN_DOORBELL
           atomic { cseen = seen; cblocked = 1 };    /* blocks whatever WRITE is by now */
#else
           atomic {                                  /* waitAsync(WRITE, seen) */
             if
             :: WRITE == seen -> cseen = seen; cblocked = 1; PROBE(PROBE_CONSUMER_PARKS)
             :: else -> skip
             fi
           };
#endif
           (cblocked == 0)
        fi;
        SLEEPING = 0
     fi
  od;
  assert(r == N && WRITE == N)
}
#else
/* ---- LINK: the main thread's ShardLink feeding a shard's blocking loop (see the header) ---- */

/* publishDeferred: store WRITE (if anything is new), then report load SLEEPING == 1 in `sl` */
inline publishDeferred() {
#ifdef BROKEN_DEFERRED_LOAD_FIRST
  sl = SLEEPING;
#endif
  if
  :: published != w -> published = w; WRITE = w
  :: else -> skip
  fi;
#ifndef BROKEN_DEFERRED_LOAD_FIRST
  sl = SLEEPING
#endif
}

/* the end of an event-loop turn: settleWake clears wakeOwed, then writer.notify() */
inline settle() {
  if
  :: owed ->
     owed = 0;
     if
     :: SLEEPING == 1 -> NOTIFY_WRITE
     :: else -> skip
     fi
  :: else -> skip
  fi;
#ifdef BROKEN_DEFERRED_FIRST_ONLY
  asked = 0;
#endif
  STALE_CHECK(!CONSUMER_STALE)
}

active proctype producer() {
  byte w = 0;          /* committed, maybe not yet published */
  byte published = 0;
  byte rcache = 0;     /* readCache */
  byte rseen;
  bit  sl;             /* publishDeferred's answer */
  bit  owed = 0;       /* ShardLink.wakeOwed */
#ifdef BROKEN_DEFERRED_FIRST_ONLY
  bit  asked = 0;      /* this turn already asked whether the shard sleeps */
#endif

  do
  :: w == N -> break
  :: else ->
     if
     :: w - rcache < CAP -> skip
     :: else -> rcache = READ
     fi;
     if
     :: w - rcache < CAP ->
        w++;                                         /* commit */
        if
        :: true -> publishDeferred();                /* a client frame (writeFrame) */
#ifdef BROKEN_DEFERRED_FIRST_ONLY
           if
           :: !asked -> asked = 1; owed = owed | sl
           :: else -> skip
           fi
#else
           if
           :: sl -> owed = 1                         /* owe(): one settle per turn */
           :: else -> skip
           fi
#endif
        :: true -> publish()                         /* a server publish or control record */
        fi
     :: else ->
        /* full: a client frame is refused (overloaded, not modelled: it is not sent); a control
           record waits in flush(): waitForSpace, then write() = commit + publish().
           waitForSpace's own publish() finds nothing new: every commit here is published at once. */
        assert(published == w);
        do
        :: rcache = READ;                            /* canFit */
           if
           :: w - rcache < CAP -> break
           :: else ->
              rseen = rcache;
              PRODUCER_WAITING = 1;
              if
              :: READ == rseen ->
                 atomic {                            /* waitAsync(READ, rseen) */
                   if
                   :: READ == rseen -> pseen = rseen; pblocked = 1; PROBE(PROBE_PRODUCER_PARKS)
                   :: else -> skip
                   fi
                 };
                 settle();                           /* the await ends the turn */
                 (pblocked == 0)
              :: else -> skip
              fi;
              PRODUCER_WAITING = 0
           fi
        od;
        w++;
        publish()
     fi;
     if                                              /* the turn ends here, or goes on */
     :: true -> settle()
     :: true -> skip
     fi
  od;
  settle()
}

active proctype consumer() {
  byte wcache = 0;     /* writeCache; cpeek is the next record (handed out and released at once) */
  byte seen;
  bit  took;           /* this batch handled a record */

  do
  :: cpeek == N -> break
  :: else ->
     took = 0;
     do                                              /* while n < BATCH && next() >= 0 */
     :: cpeek == wcache ->
        wcache = WRITE;                              /* next(): reload only when caught up */
        if
        :: cpeek == wcache -> break
        :: else -> cpeek++; took = 1
        fi
     :: cpeek != wcache -> cpeek++; took = 1
     :: took -> break                                /* BATCH reached (or a drain record) */
     od;
     if
     :: took ->
        READ = cpeek;                                /* syncRead */
        if
        :: PRODUCER_WAITING == 1 -> NOTIFY_READ
        :: else -> skip
        fi;
        STALE_CHECK(!(pblocked && pseen != READ))
     :: else -> skip
     fi;
     if
     :: cpeek == N -> skip
     :: cpeek != wcache -> skip                      /* the batch stopped with records left */
     :: else ->
        wcache = WRITE;                              /* hasNext() (the spin) */
        if
        :: cpeek != wcache -> skip
        :: else ->
           wcache = WRITE;                           /* if (!hasNext()) waitForDataSync() */
           if
           :: cpeek != wcache -> skip
           :: else ->
              seen = wcache;
#ifdef PARK_LATE_ANNOUNCE
              if
              :: WRITE != seen -> skip               /* re-check first */
              :: else ->
                 SLEEPING = 1;                       /* then announce */
#else
              SLEEPING = 1;                          /* announcePark */
              if
              :: WRITE != seen -> SLEEPING = 0       /* a publish raced the announcement */
              :: else ->
#endif
#ifdef BROKEN_PARK_RELOAD
                 seen = WRITE;                       /* Atomics.wait(h, WRITE, load WRITE) */
#endif
                 atomic {                            /* Atomics.wait(WRITE, seen) */
                   if
                   :: WRITE == seen -> cseen = seen; cblocked = 1; PROBE(PROBE_CONSUMER_PARKS)
                   :: else -> skip
                   fi
                 };
                 (cblocked == 0);
                 SLEEPING = 0                        /* unpark */
              fi
           fi
        fi
     fi
  od;
  assert(cpeek == N && WRITE == N)
}
#endif
