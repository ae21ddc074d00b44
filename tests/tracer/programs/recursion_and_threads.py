"""Recursion (plain and mutual) and threads."""
import threading
from concurrent.futures import ThreadPoolExecutor


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def is_even(n):
    return True if n == 0 else is_odd(n - 1)


def is_odd(n):
    return False if n == 0 else is_even(n - 1)


def deep(n):
    if n == 0:
        return 0
    return 1 + deep(n - 1)


def work(k):
    return sum(fib(i) for i in range(k))


def in_thread(results, k):
    results.append((k, work(k)))


def main():
    print(fib(15), is_even(10), is_odd(7), deep(200))
    results = []
    threads = [threading.Thread(target=in_thread, args=(results, k)) for k in range(2, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sorted(results))
    with ThreadPoolExecutor(max_workers=3) as pool:
        print(list(pool.map(work, range(8))))
    try:
        deep(100000)
    except RecursionError:
        print("recursion error")


main()
