"""The dashboard in a real headless Chromium (issue 22), one scenario per run:

    python dashboard.py SCENARIO

against the broker whose HTTP API is at $WEIR_HTTP_URL. Logs in through the login
form as $WEIR_USER / $WEIR_PASSWORD (default guest/guest), walks the pages the
scenario names and asserts their key content. With $WEIR_SCREENSHOTS set, saves one
screenshot per page there (docs/screenshots/ holds the committed ones). Prints OK
and exits 0, or prints what failed and exits 1. Driven by
crates/weir/tests/it/dashboard.rs, which sets up the broker's state first.
"""
import base64
import json
import os
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

URL = os.environ["WEIR_HTTP_URL"].rstrip("/")
USER = os.environ.get("WEIR_USER", "guest")
PASSWORD = os.environ.get("WEIR_PASSWORD", "guest")
SHOTS = os.environ.get("WEIR_SCREENSHOTS")


def fail(what):
    print(f"FAILED: {what}", flush=True)
    sys.exit(1)


def check(condition, what):
    if not condition:
        fail(what)


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("WEIR_CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--disable-gpu"):
        options.add_argument(arg)
    service = Service(os.environ.get("WEIR_CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def wait_for(condition, what, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # the page is changing under us
            pass
        time.sleep(0.1)
    fail(f"waited {seconds} s for {what}")


def submit(driver, button_id):
    """Clicks a form's submit button and waits for the page it loads (the old
    page's button goes stale), so that what is checked next is the new page, not
    the old one that may already pass the check."""
    old = driver.find_element(By.ID, button_id)
    old.click()

    def gone():
        try:
            old.is_enabled()
            return False
        except StaleElementReferenceException:
            return True

    wait_for(gone, f"the page {button_id} loads")


def shot(driver, name):
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        driver.save_screenshot(os.path.join(SHOTS, f"{name}.png"))


def text(driver, css):
    return driver.find_element(By.CSS_SELECTOR, css).text


def log_in(driver, then="/"):
    driver.get(URL + then)
    check("/login" in driver.current_url, f"a page without a login goes to /login: {driver.current_url}")
    driver.find_element(By.ID, "username").send_keys(USER)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    wait_for(lambda: "/login" not in driver.current_url, "the login to go through")
    check(driver.current_url == URL + then, f"back to {then} after the login: {driver.current_url}")


def overview(driver):
    log_in(driver, "/")
    check(text(driver, "#user") == USER, "the user is shown")
    # The live panel updates: its stream sets data-updated on every event.
    live = driver.find_element(By.ID, "live")
    wait_for(lambda: live.get_attribute("data-updated"), "a live update")
    wait_for(lambda: text(driver, "#ready") == "6", "6 ready messages in Ready (orders, jobs.dlq)")
    check(text(driver, "#health") == "healthy", "healthy")
    rows = driver.find_elements(By.CSS_SELECTOR, "#stuck tr")
    check(any("orders" in r.text for r in rows), "orders among the oldest messages")
    extended = text(driver, "#extended")
    check("slow" in extended and " 3 " in f" {extended} ", f"slow's lease extended 3 times: {extended}")
    time.sleep(2.5)  # a few points on the charts for the screenshot
    shot(driver, "overview")


def queues(driver):
    log_in(driver, "/ui/queues")
    row = driver.find_element(By.CSS_SELECTOR, 'tr[data-queue="orders"]')
    check(row.find_element(By.CSS_SELECTOR, 'td[data-col="ready"]').text == "3", "orders has 3 ready")
    shot(driver, "queues")
    # Filtering as you type (htmx), then without JavaScript's help (the form).
    box = driver.find_element(By.ID, "filter")
    box.send_keys("ord")
    wait_for(lambda: "other" not in driver.find_element(By.ID, "queues").text, "the filter to apply")
    check("orders" in driver.find_element(By.ID, "queues").text, "orders still listed")
    driver.get(URL + "/ui/queues?sort=ready&dir=desc")
    first = driver.find_elements(By.CSS_SELECTOR, "#queues tr[data-queue]")[0]
    check(first.get_attribute("data-queue") == "orders", "sorted by ready, orders first")
    first.find_element(By.TAG_NAME, "a").click()
    wait_for(lambda: text(driver, "#queue-name") == "orders", "the queue page")
    check("order-1" in text(driver, "#peek"), "the peek shows the first body")
    driver.find_element(By.ID, "publish-body").send_keys("a test message")
    driver.find_element(By.ID, "publish").click()
    wait_for(lambda: "Published" in text(driver, "#flash"), "the publish to be reported")
    wait_for(lambda: text(driver, "#ready") == "4", "4 ready after the test message")
    shot(driver, "queue")
    driver.find_element(By.ID, "purge").click()
    # The confirmation box is required: the browser does not send the form.
    check(text(driver, "#queue-name") == "orders", "not purged without confirmation")
    driver.find_element(By.ID, "purge-confirm").click()
    driver.find_element(By.ID, "purge").click()
    wait_for(lambda: "Purged 4 messages" in text(driver, "#flash"), "the purge to be reported")


def dead_letters(driver):
    # From the Overview in three clicks: the count, the dead-letter queue, a message.
    log_in(driver, "/")
    driver.find_element(By.ID, "dead-letters-link").click()
    wait_for(lambda: driver.find_elements(By.ID, "dead-letter-queues"), "the dead-letter queues")
    row = driver.find_element(By.CSS_SELECTOR, '#dead-letter-queues tr[data-queue="jobs.dlq"]')
    check("jobs" in row.text and "3" in row.text, f"jobs.dlq holds 3 from jobs: {row.text}")
    row.find_element(By.TAG_NAME, "a").click()
    wait_for(lambda: text(driver, "#queue-name") == "jobs.dlq", "the dead-letter queue's page")
    letters = driver.find_elements(By.CSS_SELECTOR, "#letters tr[data-id]")
    check(len(letters) == 3, f"3 dead letters listed, not {len(letters)}")
    first = letters[0].text
    check("rejected" in first and "jobs" in first and "poison-" in first,
          f"reason, source queue and body shown: {first}")
    shot(driver, "dead-letters")
    # Redrive one, delete one, redrive the rest.
    letters[0].find_element(By.XPATH, ".//button[text()='Redrive']").click()
    wait_for(lambda: "Redrove 1 message." in text(driver, "#flash"), "one redriven")
    letters = driver.find_elements(By.CSS_SELECTOR, "#letters tr[data-id]")
    check(len(letters) == 2, "two left")
    letters[0].find_element(By.NAME, "at").click()
    driver.find_element(By.ID, "delete-selected").click()
    wait_for(lambda: "Deleted 1 message." in text(driver, "#flash"), "one deleted")
    driver.find_element(By.ID, "redrive-all").click()
    wait_for(lambda: "Redriving 1 messages" in text(driver, "#flash"), "the redrive of the rest")
    wait_for(lambda: text(driver, "#ready") == "0", "the dead-letter queue to empty")


def seed_redrive(driver):
    # The seed tutorial: the worker's poison pill is in messages-dlq; redrive it.
    log_in(driver, "/")
    driver.find_element(By.ID, "dead-letters-link").click()
    wait_for(lambda: driver.find_elements(By.ID, "dead-letter-queues"), "the dead-letter queues")
    driver.find_element(By.CSS_SELECTOR, '#dead-letter-queues tr[data-queue="messages-dlq"] a').click()
    wait_for(lambda: text(driver, "#queue-name") == "messages-dlq", "the dead-letter queue's page")
    letters = driver.find_elements(By.CSS_SELECTOR, "#letters tr[data-id]")
    check(len(letters) == 1, f"one dead letter, not {len(letters)}")
    row = letters[0].text
    check("delivery_limit" in row and "messages" in row and "poison pill" in row,
          f"the pill, out of deliveries, from messages: {row}")
    driver.find_element(By.ID, "redrive-all").click()
    wait_for(lambda: text(driver, "#ready") == "0", "the dead-letter queue to empty")


def exchanges(driver):
    log_in(driver, "/ui/exchanges")
    row = driver.find_element(By.CSS_SELECTOR, '#exchanges tr[data-exchange="events"]')
    check("topic" in row.text and row.text.endswith("1"), f"events: topic, one unroutable: {row.text}")
    row.find_element(By.TAG_NAME, "a").click()
    wait_for(lambda: text(driver, "#exchange-name") == "events", "the exchange's page")
    check("order.*" in text(driver, "#bindings"), "its binding to orders")
    driver.find_element(By.ID, "route-key").send_keys("order.created")
    driver.find_element(By.ID, "route").click()
    wait_for(lambda: "Reaches: orders" in text(driver, "#route-result"), "order.created reaches orders")
    shot(driver, "exchanges")
    box = driver.find_element(By.ID, "route-key")
    box.clear()
    box.send_keys("user.created")
    driver.find_element(By.ID, "route").click()
    wait_for(lambda: "unroutable" in text(driver, "#route-result"), "user.created reaches nothing")


def admin(driver):
    log_in(driver, "/ui/admin")
    driver.find_element(By.ID, "new-user").send_keys("carol")
    driver.find_element(By.ID, "new-password").send_keys("c4rol-secret")
    driver.find_element(By.ID, "new-tags").send_keys("monitoring")
    driver.find_element(By.ID, "save-user").click()
    wait_for(lambda: "Added user carol." in text(driver, "#flash"), "carol added")
    row = driver.find_element(By.CSS_SELECTOR, '#users tr[data-user="carol"]')
    check("monitoring" in row.text, f"carol is tagged monitoring: {row.text}")
    driver.find_element(By.ID, "perm-user").send_keys("carol")
    driver.find_element(By.ID, "set-permissions").click()
    wait_for(lambda: "Set carol's permissions in /." in text(driver, "#flash"), "carol's permissions")
    check(driver.find_elements(By.CSS_SELECTOR, '#permissions tr[data-permission="carol@/"]'), "listed")
    driver.find_element(By.ID, "new-vhost").send_keys("staging")
    driver.find_element(By.ID, "add-vhost").click()
    wait_for(lambda: "Added vhost staging." in text(driver, "#flash"), "staging added")
    shot(driver, "admin")
    row = driver.find_element(By.CSS_SELECTOR, '#vhosts tr[data-vhost="staging"]')
    row.find_element(By.NAME, "confirm").click()
    row.find_element(By.TAG_NAME, "button").click()
    wait_for(lambda: "Deleted vhost staging" in text(driver, "#flash"), "staging deleted")
    row = driver.find_element(By.CSS_SELECTOR, '#users tr[data-user="carol"]')
    row.find_element(By.TAG_NAME, "button").click()
    wait_for(lambda: "Deleted user carol." in text(driver, "#flash"), "carol deleted")
    check(not driver.find_elements(By.CSS_SELECTOR, '#users tr[data-user="carol"]'), "carol gone")


def append(stream, record):
    """Appends one record over the HTTP API, as guest."""
    request = urllib.request.Request(f"{URL}/api/streams/{stream}/messages", method="POST",
                                     data=json.dumps(record).encode())
    request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    request.add_header("Content-Type", "application/json")
    urllib.request.urlopen(request).read()


def streams(driver):
    log_in(driver, "/ui/streams")
    row = driver.find_element(By.CSS_SELECTOR, '#streams tr[data-stream="events"]')
    check("3" in row.text, f"events holds 3 records: {row.text}")
    row.find_element(By.TAG_NAME, "a").click()
    wait_for(lambda: text(driver, "#stream-name") == "events", "the stream's page")
    check(len(driver.find_elements(By.CSS_SELECTOR, "#records tr[data-offset]")) == 3, "3 records")
    # A filter by key, then by header.
    driver.find_element(By.ID, "browse-key").send_keys("user-2")
    submit(driver, "browse")
    wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#records tr[data-offset]")) == 1,
             "one record with key user-2")
    check("login" in text(driver, "#records"), "its header shown")
    driver.find_element(By.ID, "browse-key").clear()
    driver.find_element(By.ID, "browse-header").send_keys("type=signup")
    from_box = driver.find_element(By.ID, "browse-from")
    from_box.clear()
    from_box.send_keys("ago:600000")
    submit(driver, "browse")
    wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#records tr[data-offset]")) == 2,
             "two signups in the last ten minutes")
    # From a UTC time: one long past gives them all, one to come none.
    for when, rows in (("2000-01-01 00:00", 2), ("2999-01-01 00:00", 0)):
        from_box = driver.find_element(By.ID, "browse-from")
        from_box.clear()
        from_box.send_keys(when)
        submit(driver, "browse")
        wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#records tr[data-offset]")) == rows,
                 f"{rows} signups from {when}")
    # The live tail shows what is appended now.
    append("events", {"key": "user-9", "headers": {"type": "signup"}, "body": "live one"})
    wait_for(lambda: "live one" in text(driver, "#tail"), "the appended record in the live tail")
    shot(driver, "stream")
    driver.find_element(By.CSS_SELECTOR, '#groups tr[data-group="g"] a').click()
    wait_for(lambda: text(driver, "#group-name") == "g", "the group's page")
    wait_for(lambda: text(driver, "#lag") == "3", "3 records behind (4 appended, 1 committed)")
    shot(driver, "group")
    driver.find_element(By.ID, "reset").click()  # a dry run: the box is ticked
    wait_for(lambda: "Would set the committed offsets to 0: 0." in text(driver, "#flash"), "the dry run")
    check(text(driver, "#lag") == "3", "a dry run changes nothing")
    driver.find_element(By.ID, "reset-dry").click()
    driver.find_element(By.ID, "reset").click()
    wait_for(lambda: "Set the committed offsets to 0: 0." in text(driver, "#flash"), "the reset")
    wait_for(lambda: text(driver, "#lag") == "4", "4 records behind after the reset to first")


def connections(driver):
    # The consumer on its queue's page, linked to its connection.
    log_in(driver, "/ui/queues/%2F/held")
    consumers = text(driver, "#consumers")
    check("Pika Python Client Library" in consumers, f"the pika consumer of held: {consumers}")
    driver.find_element(By.CSS_SELECTOR, "#consumers a").click()
    wait_for(lambda: "/ui/connections" in driver.current_url, "its connection")
    rows = driver.find_elements(By.CSS_SELECTOR, "#connections tr[data-connection]")
    target = [r for r in rows if "orders-worker" in r.text]
    check(len(target) == 1, f"the pika connection is listed: {[r.text for r in rows]}")
    row = target[0]
    check("Pika Python Client Library" in row.text and USER in row.text, f"its client and user: {row.text}")
    shot(driver, "connections")
    row.find_element(By.NAME, "reason").send_keys("maintenance window")
    row.find_element(By.CSS_SELECTOR, "button").click()
    wait_for(lambda: "Closed connection" in text(driver, "#flash"), "the close to be reported")


def log_out(driver):
    log_in(driver, "/ui/queues")
    driver.find_element(By.CSS_SELECTOR, "header form button").click()
    wait_for(lambda: "/login" in driver.current_url, "the login page after logging out")
    driver.get(URL + "/ui/queues")
    check("/login" in driver.current_url, "the session ended with the logout")


def wrong_password(driver):
    driver.get(URL + "/login")
    driver.find_element(By.ID, "username").send_keys(USER)
    driver.find_element(By.ID, "password").send_keys("not the password")
    driver.find_element(By.ID, "login").click()
    wait_for(lambda: "wrong" in text(driver, "#flash"), "the refusal")
    driver.get(URL + "/")
    check("/login" in driver.current_url, "no session after a refused login")


SCENARIOS = {f.__name__: f for f in (overview, queues, dead_letters, seed_redrive, exchanges,
                                     streams, admin, connections, log_out, wrong_password)}

if __name__ == "__main__":
    driver = browser()
    try:
        for name in sys.argv[1:]:
            began = time.monotonic()
            SCENARIOS[name](driver)
            driver.delete_all_cookies()
            print(f"{name}: {time.monotonic() - began:.1f} s", flush=True)
    finally:
        driver.quit()
    print("OK", flush=True)
