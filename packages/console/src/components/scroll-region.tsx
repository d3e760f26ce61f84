import { type ReactNode, useEffect, useRef, useState } from 'react';

/**
 * The wrapper that lets a wide table scroll sideways (on a phone). While it does scroll, it is a named
 * region the keyboard can reach (WCAG 2.1.1; axe's scrollable-region-focusable): someone without a
 * mouse must be able to scroll it too. While everything fits, it is no extra Tab stop.
 */
export function ScrollRegion({ label, children }: { label: string; children: ReactNode }) {
  const ref = useRef<HTMLDivElement>(null);
  const [scrolls, setScrolls] = useState(false);
  useEffect(() => {
    const wrap = ref.current;
    if (!wrap) return;
    const check = () =>
      setScrolls(wrap.scrollWidth > wrap.clientWidth || wrap.scrollHeight > wrap.clientHeight);
    check();
    // The wrapper's size (the window) and the content's (rows arriving) both change whether it scrolls.
    const observer = new ResizeObserver(check);
    observer.observe(wrap);
    if (wrap.firstElementChild) observer.observe(wrap.firstElementChild);
    return () => observer.disconnect();
  }, []);
  return (
    <div
      ref={ref}
      className="table-wrap"
      {...(scrolls ? { tabIndex: 0, role: 'region', 'aria-label': `${label} (scrolls sideways)` } : {})}
    >
      {children}
    </div>
  );
}
