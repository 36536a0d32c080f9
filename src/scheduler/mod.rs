//! The scheduler: the planner writes occurrence rows ahead of time; the dispatcher fires them.

pub mod planner;
