//! Faithful simulators of the Axle and Canopy Connect APIs, their hosted consent pages and
//! their webhook senders, with scenario and fault controls.
