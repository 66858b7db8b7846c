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
     STALE_CHECK(!(cblocked && cseen != WRITE))
  :: else -> skip
  fi
}

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
